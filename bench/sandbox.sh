#!/usr/bin/env bash
# keyward benchmark: start-up cost of `keyward run -- /bin/true`, next to
# bubblewrap doing comparable work. See bench/README.md ("Sandbox start-up").
#
#   bench/sandbox.sh
#
# Measures with hyperfine (no shell: -N) the wall time of these commands,
# interleaved round by round: /bin/true alone, bwrap with the reference
# options of the issue, firejail with comparable options, `keyward run`
# with no policy (deny-all) and
# `keyward run` with a realistic policy (2 credentials, 3 routes, sandbox
# limits); and, to explain them, keyward with SSL_CERT_FILE set, bwrap and
# keyward 100 ms apart, and `keyward --version`. Then it breaks one keyward
# run down: strace once, uprobes on
# keyward's own functions over a few dozen runs (perf probe), a CPU profile
# (perf record), and the cost of a cgroup v1 mkdir/attach/rmdir alone.
# Results go to bench/results/YYYY-MM-DD-HOSTNAME[-N]-sandbox.md (N: the
# first number that overwrites no earlier file of the day) and a summary
# is printed.
#
# Every process it starts is waited for; the uprobes it adds (group
# "kwbench") and the cgroups it makes for the cgroup measurement (named
# kwbench-PID-N) are removed on exit.
#
# Knobs (environment), defaults are the published settings:
#   BENCH_RUNS=300        hyperfine --runs, per command and round
#   BENCH_WARMUP=20       hyperfine --warmup
#   BENCH_ROUNDS=3        rounds of all the commands (interleaved)
#   BENCH_TRACE_RUNS=30   keyward runs per case under uprobes
#   BENCH_PROFILE_RUNS=20 keyward runs under perf record -g (0: skip)
#   BENCH_CGROUP_RUNS=200 mkdir/attach/rmdir cycles (0: skip)
#   BENCH_PROBES=auto     auto|0|1: the uprobe breakdown
#   BENCH_OUT=path/to/results.md
#   BENCH_REV=REV         build and measure that commit (exported with git
#                         archive) instead of the working tree
#   BENCH_KEEP=1          keep the work directory (hyperfine JSON, traces)
#   BENCH_QUIET_WAIT=300  seconds to wait for other jobs to leave the CPUs
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh"
BUILD=$ROOT/build-bench-run
PY=/usr/bin/python3

RUNS=${BENCH_RUNS:-300}
WARMUP=${BENCH_WARMUP:-20}
ROUNDS=${BENCH_ROUNDS:-3}
TRACE_RUNS=${BENCH_TRACE_RUNS:-30}
PROFILE_RUNS=${BENCH_PROFILE_RUNS:-20}
CGROUP_RUNS=${BENCH_CGROUP_RUNS:-200}
PROBES=${BENCH_PROBES:-auto}
# made up; nothing real is ever used here
export BENCH_GITHUB_TOKEN="ghp_benchMADEUP0123456789abcdefghijklmnopq"
export BENCH_OPENAI_KEY="sk-benchMADEUP0123456789abcdefghijklmnopqrstuv"
GITHUB_PLACEHOLDER="ghp_kwPLACEHOLDERgithub0000000000000000"

BWRAP_ARGS=(--unshare-all --die-with-parent --ro-bind / / --dev /dev --proc /proc --tmpfs /tmp
	--new-session --cap-drop ALL --clearenv /bin/true)
# firejail as close to that as its options go: no profile (the default
# profile would add dozens of blacklist mounts), its own mount and PID
# namespaces (always), an empty network namespace, a new IPC namespace,
# tmpfs home and /tmp, a minimal /dev, no capabilities, no_new_privs and
# its default seccomp filter. It keeps / writable where bwrap binds it
# read-only, and needs no user namespace as root.
FIREJAIL_ARGS=(--quiet --noprofile --net=none --ipc-namespace --private --private-tmp --private-dev
	--caps.drop=all --nonewprivs --seccomp /bin/true)

log() { printf 'bench: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- tools ----
# Bench-only packages (Debian 12), checked like scripts/deps.sh does; they
# are not keyward's dependencies, so they are not listed there.
BENCH_PACKAGES=(bubblewrap firejail hyperfine strace linux-perf)

ensure_tools() {
	"$ROOT/scripts/deps.sh" # keyward's own build dependencies (and python3)
	bench_install "${BENCH_PACKAGES[@]}"
	[ -x "$PY" ] || die "$PY is missing"
}

# Release build (bench_build) in its own directory, build-bench-run/: the
# working tree, uncommitted changes included and said so in the results.
# With BENCH_REV, that commit exported from git instead, built in
# build-bench-run-REV/.
build_keyward() {
	local src=$ROOT
	if [ -n "${BENCH_REV:-}" ]; then
		bench_export "$BENCH_REV" "$ROOT/build-bench-run"
		src=$BENCH_SRC
		BUILD=$ROOT/build-bench-run-$BENCH_REVSHORT
		KEYWARD_REV="$BENCH_REVSHORT (BENCH_REV=$BENCH_REV, exported from git)"
	else
		KEYWARD_REV=$(bench_tree_label)
	fi
	[ -x "$BUILD/keyward" ] || log "building keyward in ${BUILD#"$ROOT"/}"
	bench_build "$BUILD" "$src" # a no-op when up to date (libkeyward.so with the front)
	KEYWARD=$BUILD/keyward
	BUILD_SRC=$src
}

# The uprobe breakdown needs keyward's functions as functions: link-time
# optimisation inlines most of them (and the front's into main), so it
# probes the same code built without it, in BUILD-trace/. Its timings are
# those of that build; the hyperfine figures are the LTO build's.
build_trace() {
	TRACE_BUILD=$BUILD-trace
	[ -x "$TRACE_BUILD/keyward" ] || log "building keyward without LTO in ${TRACE_BUILD#"$ROOT"/} (for the uprobes)"
	bench_build "$TRACE_BUILD" "$BUILD_SRC" -Db_lto=false
}

# ------------------------------------------------------------ processes ----
WORK=""
PROBES_ADDED=0
cleanup() {
	if [ "$PROBES_ADDED" = 1 ]; then
		perf probe -q -d 'kwbench:*' >/dev/null 2>&1 || true
	fi
	# cgroups of the cgroup measurement, should it have been interrupted
	local d
	for d in /sys/fs/cgroup/*/kwbench-$$-* /sys/fs/cgroup/*/*/kwbench-$$-*; do
		[ -d "$d" ] && rmdir "$d" 2>/dev/null
	done
	[ -n "$WORK" ] && [ -z "${BENCH_KEEP:-}" ] && rm -rf "$WORK"
	return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Share of the CPUs busy over 2 s (other people's jobs share this machine).
cpu_busy_pct() {
	local a b
	a=($(head -1 /proc/stat))
	sleep 2
	b=($(head -1 /proc/stat))
	local total=0 idle i
	for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
	idle=$((b[4] - a[4] + b[5] - a[5]))
	echo $(((total - idle) * 100 / (total > 0 ? total : 1)))
}

# Waits (at most BENCH_QUIET_WAIT seconds, default 300) for the machine to
# be quiet before measuring.
wait_quiet() {
	local i busy n=$(((${BENCH_QUIET_WAIT:-300} + 4) / 5))
	[ "$n" -ge 1 ] || n=1 # one look even when told not to wait
	for i in $(seq "$n"); do
		busy=$(cpu_busy_pct)
		[ "$busy" -le 10 ] && break
		log "CPUs are ${busy}% busy with other work; waiting for quiet ($i/$n)"
		sleep 3
	done
	BUSY_START=${BUSY_START:-$busy}
	[ "$busy" -le 10 ] || log "warning: measuring on a busy machine (${busy}% busy); numbers will be noisy"
}

# CPU time of the machine and of every process, to tell afterwards how much
# of the machine other work used during a measurement. First line: the
# cpu line of /proc/stat; then one line per process:
# pid starttime kthread ticks(user+system+children's) ppid.
proc_snapshot() { # file
	"$PY" - "$1" <<-'PY'
		import os, sys
		out = [open("/proc/stat").readline().strip()]
		for p in os.listdir("/proc"):
		    if not p.isdigit():
		        continue
		    try:
		        s = open(f"/proc/{p}/stat").read()
		    except OSError:
		        continue
		    r = s.rsplit(")", 1)[1].split()
		    flags, ticks = int(r[6]), sum(int(x) for x in r[11:15])
		    kthread = 1 if flags & 0x00200000 else 0
		    out.append(f"{p} {r[19]} {kthread} {ticks} {r[1]}")
		open(sys.argv[1], "w").write("\n".join(out) + "\n")
	PY
}

# Ticks used between two snapshots: "ours=" by this script and its
# descendants (hyperfine and everything it ran are reaped by the time of
# the second snapshot, so their time is the script's children's time),
# "kernel=" by kernel threads (e.g. namespace teardown in kworkers, part of
# which our runs cause), "other=" the rest of the busy time of the
# machine: other people's work.
foreign_ticks() { # before after
	"$PY" - "$1" "$2" "$$" <<-'PY'
		import sys
		def load(f):
		    lines = open(f).read().splitlines()
		    cpu = [int(x) for x in lines[0].split()[1:9]]
		    d = {}
		    for line in lines[1:]:
		        pid, start, kt, ticks, ppid = line.split()
		        d[(pid, start)] = (pid, int(kt), int(ticks), ppid)
		    return cpu, d
		(ca, a), (cb, b), me = load(sys.argv[1]), load(sys.argv[2]), sys.argv[3]
		dc = [y - x for x, y in zip(ca, cb)]
		busy = sum(dc) - dc[3] - dc[4]
		parent = {v[0]: v[3] for v in b.values()}
		def mine(pid):
		    for _ in range(64):
		        if pid == me:
		            return True
		        if pid not in parent:
		            return False
		        pid = parent[pid]
		    return False
		ours = kernel = 0
		for key, (pid, kt, ticks, ppid) in b.items():
		    d = ticks - a.get(key, (pid, kt, 0, ppid))[2]
		    if mine(pid):
		        ours += d
		    elif kt and d > 0:
		        kernel += d
		print(f"other={max(0, busy - ours - kernel)} kernel={kernel} ours={ours} busy={busy}")
	PY
}

# Share (%) of the machine's CPU time that other work used over some runs.
foreign_pct() { # file.cpu...
	"$PY" - "$@" <<-'PY'
		import sys
		other = cap = 0.0
		for f in sys.argv[1:]:
		    c = dict(x.split("=") for x in open(f).read().split())
		    other += int(c["other"])
		    cap += int(c["nproc"]) * int(c["clk_tck"]) * float(c["wall"])
		print(int(round(100 * other / cap)) if cap else 0)
	PY
}

# ------------------------------------------------------------- commands ----
case_cmd() { # case -> the command line hyperfine runs (split by hyperfine, no shell)
	case $1 in
	true) echo "/bin/true" ;;
	bwrap | bwrap-apart) echo "bwrap ${BWRAP_ARGS[*]}" ;;
	firejail) echo "firejail ${FIREJAIL_ARGS[*]}" ;;
	keyward-none | keyward-none-apart) echo "$KEYWARD run -- /bin/true" ;;
	keyward-policy) echo "$KEYWARD run --policy $WORK/policy.yaml -- /bin/true" ;;
	keyward-certfile) echo "$KEYWARD run -- /bin/true" ;;
	keyward-version) echo "$KEYWARD --version" ;;
	esac
}
# The environment of a case. keyward used to parse every certificate of
# the system bundle at start when SSL_CERT_FILE names one (the hashed
# directory is read lazily); many CI and container images set it, so
# keyward-certfile runs with it set. The other cases run with stock Debian
# settings (SSL_CERT_FILE and SSL_CERT_DIR unset, see main).
CERTFILE=/etc/ssl/certs/ca-certificates.crt
case_env() { # case
	case $1 in
	keyward-certfile) echo "SSL_CERT_FILE=$CERTFILE" ;;
	*) echo "KEYWARD_BENCH_CASE=$1" ;;
	esac
}
# hyperfine starts each run as soon as the last one ended. The "-apart"
# cases wait 100 ms before each run (hyperfine --prepare), as between two
# launches by hand: on cgroup v1, moving a process into a cgroup waits for
# an RCU grace period unless another move happened moments before, so
# back-to-back runs hide part of that cost.
APART="sleep 0.1"
case_prepare() { # case
	case $1 in
	*-apart) echo "$APART" ;;
	esac
}
CASES=(true bwrap firejail keyward-none keyward-policy keyward-certfile bwrap-apart keyward-none-apart keyward-version)

write_policy() {
	# A realistic policy: two credentials taken from keyward's environment,
	# three routes, and a sandbox section with limits. No memory limit: on
	# a cgroup v1 machine it needs the memory hierarchy, whose cgroup here
	# may belong to whatever runs the machine; pids and cpu use their own.
	cat >"$WORK/policy.yaml" <<-EOF
	version: 1
	credentials:
	  github:
	    from: env:BENCH_GITHUB_TOKEN
	    env: GITHUB_TOKEN
	    placeholder: $GITHUB_PLACEHOLDER
	  openai:
	    from: env:BENCH_OPENAI_KEY
	    env: OPENAI_API_KEY
	routes:
	  - host: api.github.com
	    methods: [GET, POST]
	    paths: ["/repos/acme/app/**"]
	    credential: github
	    inject: bearer
	  - host: github.com
	    paths: ["/acme/app.git/**"]
	    credential: github
	    inject: {basic: x-access-token}
	  - host: api.openai.com
	    methods: [POST]
	    paths: ["/v1/chat/completions"]
	    credential: openai
	    inject: bearer
	sandbox:
	  env: [TERM]
	  limits:
	    pids: 512
	    cpu: 200%
	    processes: 512
	    open_files: 4096
	    file_size: 1GiB
	    tmp_size: 256MiB
	EOF
}

# Every command must succeed, and keyward must really do what is measured:
# the policy's placeholder inside, the secret nowhere, a cgroup used.
check_commands() {
	local c got
	for c in "${CASES[@]}"; do
		(cd "$WORK/ws" && export "$(case_env "$c")" && $(case_cmd "$c")) >/dev/null || die "$c: $(case_cmd "$c") failed"
	done
	got=$(cd "$WORK/ws" && "$KEYWARD" run --policy "$WORK/policy.yaml" -- /bin/sh -c 'printf %s "$GITHUB_TOKEN"')
	[ "$got" = "$GITHUB_PLACEHOLDER" ] || die "the sandbox does not see the placeholder (got: $got)"
	got=$(cd "$WORK/ws" && "$KEYWARD" run --policy "$WORK/policy.yaml" -- /bin/sh -c 'cat /proc/self/environ; env' | tr '\0' '\n')
	case $got in *"$BENCH_GITHUB_TOKEN"* | *"$BENCH_OPENAI_KEY"*) die "a secret is visible in the sandbox" ;; esac
	(cd "$WORK/ws" && "$KEYWARD" run -v -- /bin/true) 2>"$WORK/verbose-none.txt"
	(cd "$WORK/ws" && "$KEYWARD" run -v --policy "$WORK/policy.yaml" -- /bin/true) 2>"$WORK/verbose-policy.txt"
	grep -q 'through cgroup' "$WORK/verbose-policy.txt" || die "keyward did not apply the policy's limits through a cgroup"
}

# ------------------------------------------------------------- measuring ---
run_case() { # case round
	local c=$1 r=$2 out=$WORK/rounds/r$2-$1
	local t0 t1
	proc_snapshot "$out.before"
	t0=$(date +%s.%N)
	local prep ign=""
	prep=$(case_prepare "$c")
	# keyward names its cgroup keyward-PID; one left behind by a keyward
	# that was killed makes a later run whose sandbox gets the same PID
	# fail (exit 125) when the policy sets limits. Such runs are counted
	# and left out of the statistics rather than stopping everything.
	case $c in keyward-version) ;; keyward-*) ign=--ignore-failure ;; esac
	(cd "$WORK/ws" && export "$(case_env "$c")" && hyperfine -N --style basic --warmup "$WARMUP" --runs "$RUNS" \
		$ign ${prep:+--prepare "$prep"} --export-json "$out.json" -n "$c" "$(case_cmd "$c")") >"$out.txt" 2>&1 ||
		{ cat "$out.txt" >&2; die "hyperfine failed for $c"; }
	local failed
	failed=$("$PY" -c "import json; print(sum(1 for x in json.load(open('$out.json'))['results'][0]['exit_codes'] if x))")
	[ "$failed" -eq 0 ] || log "round $r $c: $failed of $RUNS runs failed (left out of the statistics)"
	[ $((failed * 20)) -le "$RUNS" ] || die "$c: $failed of $RUNS runs failed"
	t1=$(date +%s.%N)
	proc_snapshot "$out.after"
	local f
	f=$(foreign_ticks "$out.before" "$out.after")
	echo "$f wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}') nproc=$(nproc) clk_tck=$(getconf CLK_TCK)" >"$out.cpu"
	rm -f "$out.before" "$out.after"
	log "round $r $c: median $("$PY" -c "import json; print('%.2f ms' % (json.load(open('$out.json'))['results'][0]['median'] * 1e3))"), other work $(foreign_pct "$out.cpu")% of the CPUs"
}

# ROUNDS rounds of all the cases. A round during which other work took
# more than 10 % of the CPUs is done again after waiting for quiet, up to
# ROUNDS extra rounds; the discarded runs are kept as *.discarded.
run_rounds() {
	local r c pct extra=0 f
	for r in $(seq "$ROUNDS"); do
		while :; do
			for c in "${CASES[@]}"; do
				run_case "$c" "$r"
			done
			pct=$(foreign_pct "$WORK/rounds/r$r-"*.cpu)
			[ "$pct" -gt 10 ] && [ "$extra" -lt "${BENCH_REDO_MAX:-$ROUNDS}" ] || break
			extra=$((extra + 1))
			for f in "$WORK/rounds/r$r-"*; do mv "$f" "$f.$extra.discarded"; done
			log "round $r shared the CPUs with other work ($pct %): discarded, redoing it"
			wait_quiet
		done
	done
	DISCARDED=$extra
}

# One run of each keyward case and of bwrap under strace -f -tt -T.
trace_once() {
	(cd "$WORK/ws" && strace -f -tt -T -o "$WORK/strace-keyward-none.txt" "$KEYWARD" run -- /bin/true)
	(cd "$WORK/ws" && strace -f -tt -T -o "$WORK/strace-keyward-policy.txt" \
		"$KEYWARD" run --policy "$WORK/policy.yaml" -- /bin/true)
	(cd "$WORK/ws" && strace -f -tt -T -o "$WORK/strace-bwrap.txt" bwrap "${BWRAP_ARGS[@]}")
	(cd "$WORK/ws" && strace -f -tt -T -o "$WORK/strace-firejail.txt" firejail "${FIREJAIL_ARGS[@]}")
	"$PY" - "$WORK" >"$WORK/strace-summary.json" <<-'PY'
		import json, re, sys
		from datetime import datetime
		work = sys.argv[1]
		line_re = re.compile(r"^(\d+)\s+(\d\d:\d\d:\d\d\.\d+)\s+(?:<\.\.\. )?(\w+)[(\s]")
		res = {}
		for name in ("keyward-none", "keyward-policy", "bwrap", "firejail"):
		    counts, pids, first, last = {}, set(), None, None
		    for line in open(f"{work}/strace-{name}.txt"):
		        m = line_re.match(line)
		        if not m:
		            continue
		        pid, ts, sc = m.groups()
		        pids.add(pid)
		        t = datetime.strptime(ts, "%H:%M:%S.%f")
		        first = first or t
		        last = t
		        if "resumed>" in line or "+++" in line or "---" in line:
		            continue
		        counts[sc] = counts.get(sc, 0) + 1
		    mounts = {k: counts.get(k, 0) for k in ("mount", "open_tree", "move_mount", "mount_setattr", "pivot_root", "umount2")}
		    threads = sum(1 for l in open(f"{work}/strace-{name}.txt") if "CLONE_THREAD" in l and "resumed" not in l)
		    res[name] = {
		        "syscalls": sum(counts.values()),
		        "tasks": len(pids),
		        "threads": threads,
		        "wall_ms": (last - first).total_seconds() * 1e3,
		        "mounts": mounts,
		        "new_mounts": mounts["mount"] + mounts["move_mount"],
		        "top": sorted(counts.items(), key=lambda kv: -kv[1])[:12],
		    }
		print(json.dumps(res, indent=1))
	PY
}

# Functions of the keyward front (the clone, PID 1, the early cgroup move)
# and of libkeyward.so (the rest); each probed in the one object that runs
# it. Names of older revisions (a single binary) are tried there too.
PROBE_FUNCS_FRONT=(sandbox_clone sandbox_warm_take child_main recv_all build_common recv_spec finish_root install_ca
	sandbox_landlock_apply sandbox_seccomp_install)
PROBE_FUNCS_LIB=(keyward_main cmd_run sandbox_spawn tls_ca_new_ephemeral sandbox_start sandbox_configure sandbox_finish
	sandbox_cgroup_apply proxy_main gen_build tls_client_ctx_new audit_open audit_reserve audit_load
	tls_ca_new_leaf_key worker_main audit_close sandbox_cleanup sandbox_cgroup_remove build_root)

# uprobes on keyward's functions and scheduler/cgroup tracepoints, over
# TRACE_RUNS runs of each keyward case: when each step starts and ends.
probe_breakdown() {
	build_trace
	# case_cmd and the parser below run this build (bash scoping)
	local KEYWARD=$TRACE_BUILD/keyward
	perf probe -q -d 'kwbench:*' >/dev/null 2>&1 || true
	local f added=0
	PROBES_ADDED=1
	local lib=$KEYWARD obj
	[ -f "$TRACE_BUILD/libkeyward.so" ] && lib=$TRACE_BUILD/libkeyward.so
	for f in "${PROBE_FUNCS_FRONT[@]}" "${PROBE_FUNCS_LIB[@]}"; do
		obj=$lib
		case " ${PROBE_FUNCS_FRONT[*]} " in *" $f "*) obj=$KEYWARD ;; esac
		if perf probe -q -x "$obj" -a "kwbench:$f=$f" -a "kwbench:$f=$f%return" >/dev/null 2>&1 ||
			perf probe -q -x "$KEYWARD" -a "kwbench:$f=$f" -a "kwbench:$f=$f%return" >/dev/null 2>&1; then
			added=$((added + 1))
		else
			log "no uprobe on $f (not in this revision, or inlined)"
		fi
	done
	[ "$added" -gt 0 ] || return 1
	local c
	for c in keyward-none keyward-policy keyward-certfile keyward-none-apart; do
		(cd "$WORK/ws" && export "$(case_env "$c")" && perf record -q -a -o "$WORK/probes-$c.data" -e 'kwbench:*' \
			-e sched:sched_process_exec -e sched:sched_process_exit -e sched:sched_process_fork \
			-e cgroup:cgroup_mkdir -e cgroup:cgroup_rmdir -e cgroup:cgroup_attach_task \
			-- /bin/sh -c "for i in \$(seq $TRACE_RUNS); do $(case_prepare "$c" | sed 's/$/;/') $(case_cmd "$c"); done; true") >/dev/null 2>&1 ||
			{ log "perf record with uprobes failed"; return 1; }
		perf script -i "$WORK/probes-$c.data" -F comm,pid,tid,time,event,trace 2>/dev/null |
			"$PY" "$WORK/phases.py" "$KEYWARD" >"$WORK/phases-$c.json"
		rm -f "$WORK/probes-$c.data"
		log "uprobes, $c: $(cut -c1-200 "$WORK/phases-$c.json" | head -1)…"
	done
	perf probe -q -d 'kwbench:*' >/dev/null 2>&1 || true
	PROBES_ADDED=0
}

write_phase_parser() {
	cat >"$WORK/phases.py" <<-'PY'
		# Reads `perf script -F comm,pid,tid,time,event,trace` of keyward runs
		# under uprobes; prints the median time of each step (JSON).
		import json, re, statistics, sys
		binary = sys.argv[1]
		ev_re = re.compile(r"^\s*(.+?)\s+(\d+)/(\d+)\s+([\d.]+):\s+(\w+:\w+):\s*(.*)$")
		runs, cur, by_pid = [], None, {}
		def kv(rest):
		    return dict(re.findall(r"(\w+)=(\S+)", rest))
		for line in sys.stdin:
		    m = ev_re.match(line)
		    if not m:
		        continue
		    comm, pid, tid, t, ev, rest = m.groups()
		    t = float(t) * 1e3  # ms
		    if ev == "sched:sched_process_exec" and kv(rest).get("filename") == binary:
		        cur = {"main": pid, "ev": {"exec": t}, "child": None, "cmd": None, "mkdir": [], "attach": [], "rmdir": [],
		               "count": {}}
		        runs.append(cur)
		        by_pid[pid] = cur
		        continue
		    run = by_pid.get(pid)
		    if run is None:
		        continue
		    e = run["ev"]
		    if ev == "sched:sched_process_fork":
		        child = kv(rest).get("child_pid")
		        cloning = ("sandbox_spawn" in e) or ("sandbox_clone" in e and "sandbox_clone__return" not in e)
		        if pid == run["main"] and run["child"] is None and cloning:
		            run["child"] = child
		            by_pid[child] = run
		        elif pid == run["child"] and run["cmd"] is None:
		            run["cmd"] = child
		            by_pid[child] = run
		        continue
		    if ev == "sched:sched_process_exec":
		        if pid == run["cmd"]:
		            e.setdefault("cmd_exec", t)
		        continue
		    if ev == "sched:sched_process_exit":
		        k = kv(rest)
		        if tid == run["main"] and k.get("group_dead", "true") == "true":
		            e.setdefault("exit", t)
		        elif tid == run["child"]:
		            e.setdefault("child_exit", t)
		        elif tid == run["cmd"]:
		            e.setdefault("cmd_exit", t)
		        continue
		    if ev == "cgroup:cgroup_mkdir":
		        run["mkdir"].append(t)
		        continue
		    if ev == "cgroup:cgroup_attach_task":
		        if "keyward-" in rest:  # not keyward's early no-op move into its own cgroup
		            run["attach"].append(t)
		        continue
		    if ev == "cgroup:cgroup_rmdir":
		        run["rmdir"].append(t)
		        continue
		    name = ev.split(":", 1)[1]
		    if name == "sandbox_cgroup_remove" or name == "sandbox_cgroup_remove__return":
		        if "sandbox_cleanup" in e:
		            e[name] = t  # the one in the cleanup, not the one after a failed v2 try
		        continue
		    # a function called more than once: NAME, NAME#2, ...
		    k = run["count"].get(name, 0) + 1
		    run["count"][name] = k
		    e[name if k == 1 else f"{name}#{k}"] = t

		# Names that changed between revisions: the go is sent at the end of
		# sandbox_finish (or of sandbox_start, before it existed); the child's
		# last recv_all waits for the go, its first for the maps (and the CA,
		# when the CA is sent first), a middle one for the CA.
		for r in runs:
		    e = r["ev"]
		    for k in ("sandbox_finish__return", "sandbox_start__return"):
		        if k in e:
		            e["go_sent"] = e[k]
		            break
		    n = r["count"].get("recv_all", 0)
		    if n >= 2:
		        sfx = "" if n == 1 else f"#{n}"
		        e["recv_go"] = e.get("recv_all" + sfx)
		        e["recv_go_ret"] = e.get("recv_all__return" + sfx)
		    if n >= 3 and "install_ca" not in e:
		        e["recv_ca"] = e.get("recv_all#2")
		        e["recv_ca_ret"] = e.get("recv_all__return#2")
		    if "install_ca" in e:  # since the front clones: the CA is the last wait before the go
		        e["recv_ca"], e["recv_ca_ret"] = e.get("install_ca"), e.get("install_ca__return")
		    e.setdefault("main_entry", e.get("keyward_main", e.get("cmd_run")))
		    e["fences_done"] = e.get("recv_go_ret", e.get("sandbox_seccomp_install__return"))
		    for k in [k for k, v in e.items() if v is None]:
		        del e[k]
		steps = [
		    # (key, who, label, start, end)
		    ("start", "keyward", "exec → main(): dynamic linking, library constructors", "exec", "cmd_run"),
		    ("options", "keyward", "options, policy load, checks (and audit log open, see below)", "cmd_run", "sandbox_spawn"),
		    ("clone_old", "keyward", "clone() with 7 new namespaces (single binary)", "sandbox_spawn", "sandbox_spawn__return"),
		    ("front", "keyward", "exec → the front's clone (C library only)", "exec", "sandbox_clone"),
		    ("clone", "keyward", "front: clone() with 6 new namespaces, identity maps", "sandbox_clone", "sandbox_clone__return"),
		    ("load", "keyward", "libkeyward.so: dynamic linking of OpenSSL, libevent and the rest", "sandbox_clone__return", "main_entry"),
		    ("warm", "keyward", "cgroup lock taken early (front's main thread: the grace period)", "sandbox_warm_take", "sandbox_warm_take__return"),
		    ("options2", "keyward", "options, policy load, checks, audit log open, spec sent", "main_entry", "sandbox_configure__return"),
		    ("ca", "keyward", "ephemeral CA: P-256 key + self-signed certificate", "tls_ca_new_ephemeral", "tls_ca_new_ephemeral__return"),
		    ("leaf_key", "keyward", "leaf key (at the first tunnel; on the CA thread in older revisions)", "tls_ca_new_leaf_key", "tls_ca_new_leaf_key__return"),
		    ("audit_load", "keyward", "audit log's last line (CA thread, after the clone)", "audit_load", "audit_load__return"),
		    ("maps", "keyward", "uid/gid maps", "sandbox_start", "sandbox_cgroup_apply"),
		    ("cgroup", "keyward", "cgroups: mkdir, limits, attach the child", "sandbox_cgroup_apply", "sandbox_cgroup_apply__return"),
		    ("wait_door", "keyward", "until the go is sent (CA to the child, its door received)", "sandbox_cgroup_apply__return", "go_sent"),
		    ("wait_ca", "keyward", "  of which waiting for the CA thread (single binary)", "sandbox_start__return", "sandbox_finish"),
		    ("wait_ca2", "keyward", "  of which waiting for the CA thread", "sandbox_cgroup_apply__return", "sandbox_finish"),
		    ("proxy_pre", "keyward", "proxy: until the policy generation", "go_sent", "gen_build"),
		    ("gen_build", "keyward", "proxy: policy generation (secrets, TLS client context)", "gen_build", "gen_build__return"),
		    ("trust_store", "keyward", "  of which TLS client context: system trust store", "tls_client_ctx_new", "tls_client_ctx_new__return"),
		    ("audit_open", "keyward", "audit log open (before the sandbox or in the proxy: see starts at)", "audit_open", "audit_open__return"),
		    ("audit_reserve", "keyward", "audit log open and lock (before the clone)", "audit_reserve", "audit_reserve__return"),
		    ("proxy_rest", "keyward", "proxy: server TLS context, event loops, DNS, thread start", "gen_build__return", "worker_main"),
		    ("serve", "keyward", "proxy serving until the sandbox has ended", "worker_main", "worker_main__return"),
		    ("stop", "keyward", "stop: join, last audit record, audit fdatasync", "worker_main__return", "audit_close__return"),
		    ("fdatasync", "keyward", "  of which audit_close (fdatasync)", "audit_close", "audit_close__return"),
		    ("free", "keyward", "stop: freeing the proxy (TLS contexts, trust store)", "audit_close__return", "proxy_main__return"),
		    ("cleanup", "keyward", "sandbox cleanup: cgroup rmdir", "sandbox_cleanup", "sandbox_cleanup__return"),
		    ("exit", "keyward", "return from main, exit", "sandbox_cleanup__return", "exit"),
		    ("c_wait", "child", "child: waiting for keyward's maps", "child_main", "recv_all__return"),
		    ("c_root", "child", "child: building the root (single binary: mounts, /etc, CA, pivot_root)", "build_root", "build_root__return"),
		    ("c_common", "child", "child: root, system folders, /etc, CA bundle, /dev, /proc (before the policy)", "build_common", "build_common__return"),
		    ("c_spec", "child", "child: waiting for the policy's part", "recv_spec", "recv_spec__return"),
		    ("c_root2", "child", "child: /tmp, $HOME, workspace, hidden paths, pivot_root", "finish_root", "finish_root__return"),
		    ("c_door2", "child", "child: door (lo up, listen), environment", "finish_root__return", "install_ca"),
		    ("c_ca", "child", "  waiting for keyward's CA (and writing it)", "recv_ca", "recv_ca_ret"),
		    ("c_door", "child", "child: door, environment, rlimits, capabilities (single binary)", "build_root__return", "sandbox_landlock_apply"),
		    ("c_caps", "child", "child: root read-only, rlimits, capabilities", "install_ca__return", "sandbox_landlock_apply"),
		    ("c_landlock", "child", "child: Landlock", "sandbox_landlock_apply", "sandbox_landlock_apply__return"),
		    ("c_seccomp", "child", "child: seccomp", "sandbox_seccomp_install", "sandbox_seccomp_install__return"),
		    ("c_go", "child", "child: waiting for keyward's go (cgroup attached)", "recv_go", "recv_go_ret"),
		    ("c_exec", "child", "child (PID 1): fork + exec CMD", "fences_done", "cmd_exec"),
		    ("c_cmd", "child", "CMD (/bin/true) runs", "cmd_exec", "cmd_exit"),
		    ("c_exit", "child", "PID 1 exits: namespaces torn down", "cmd_exit", "child_exit"),
		]
		marks = [
		    ("door_ready", "door received and go sent by keyward", "go_sent"),
		    ("proxy_ready", "proxy ready (worker thread running)", "worker_main"),
		    ("cmd_exec", "CMD exec'd", "cmd_exec"),
		    ("child_exit", "sandbox's PID 1 has exited", "child_exit"),
		    ("exit", "keyward has exited", "exit"),
		]
		def med(xs):
		    return statistics.median(xs) if xs else None
		out = {"runs": len(runs), "steps": [], "marks": [], "cgroup": {}}
		for key, who, label, a, b in steps:
		    xs = [r["ev"][b] - r["ev"][a] for r in runs if a in r["ev"] and b in r["ev"]]
		    starts = [r["ev"][a] - r["ev"]["exec"] for r in runs if a in r["ev"] and b in r["ev"]]
		    out["steps"].append({"key": key, "who": who, "label": label, "median_ms": med(xs),
		                         "p90_ms": (sorted(xs)[int(0.9 * (len(xs) - 1))] if xs else None),
		                         "start_ms": med(starts), "n": len(xs)})
		for key, label, ev in marks:
		    xs = [r["ev"][ev] - r["ev"]["exec"] for r in runs if ev in r["ev"]]
		    out["marks"].append({"key": key, "label": label, "median_ms": med(xs), "n": len(xs)})
		# cgroups: mkdir → attached, one per controller; rmdir in the cleanup
		att = {}
		for r in runs:
		    for i, ta in enumerate(r["attach"]):
		        if i < len(r["mkdir"]):
		            att.setdefault(i, []).append(ta - r["mkdir"][i])
		out["cgroup"] = {
		    "controllers_per_run": med([len(r["mkdir"]) for r in runs]),
		    "mkdir_to_attached_ms": [med(att[i]) for i in sorted(att)],
		    "mkdir_to_attached_max_ms": [max(att[i]) for i in sorted(att)],
		    "per_run_total_ms": med([r["ev"]["sandbox_cgroup_apply__return"] - r["ev"]["sandbox_cgroup_apply"]
		                             for r in runs if "sandbox_cgroup_apply__return" in r["ev"] and "sandbox_cgroup_apply" in r["ev"]]),
		}
		gated = [("proxy" if r["ev"]["worker_main"] > r["ev"]["child_exit"] else "sandbox")
		         for r in runs if "worker_main" in r["ev"] and "child_exit" in r["ev"]]
		out["gated_by_proxy"] = sum(1 for g in gated if g == "proxy")
		out["gated_n"] = len(gated)
		print(json.dumps(out))
	PY
}

# Where keyward's CPU goes: perf record -g over PROFILE_RUNS runs of the
# policy case; the share of samples with each function on the stack.
profile_cpu() {
	(cd "$WORK/ws" && perf record -q -F 4999 --call-graph dwarf,32768 -o "$WORK/profile.data" \
		-- /bin/sh -c "for i in \$(seq $PROFILE_RUNS); do $(case_cmd keyward-policy); done; true") >/dev/null 2>&1 ||
		{ log "perf record failed; no CPU profile"; return 1; }
	perf report -i "$WORK/profile.data" --children --comm keyward --percentage relative --sort sym --stdio -g none \
		--percent-limit 0.3 2>/dev/null >"$WORK/profile-children.txt" || true
	perf report -i "$WORK/profile.data" --no-children --sort comm,dso --stdio -g none \
		2>/dev/null >"$WORK/profile-dso.txt" || true
	rm -f "$WORK/profile.data"
}

# The cgroup v1 work of one run alone, as keyward does it when root: a
# pids (and cpu) child cgroup made, its limit written, a live process
# attached, the process ended, the cgroup removed. Once back to back, and
# once with 50 ms between cycles, as between two `keyward run`s: attaching
# waits for an RCU grace period unless another attach happened just before.
cgroup_micro() {
	"$PY" - "$CGROUP_RUNS" "$$" >"$WORK/cgroup-micro.json" <<-'PY'
		import json, os, statistics, sys, time
		n, tag = int(sys.argv[1]), sys.argv[2]
		def own(ctrl):
		    for line in open("/proc/self/cgroup"):
		        _, ctrls, path = line.rstrip("\n").split(":", 2)
		        if ctrl in ctrls.split(","):
		            return "/sys/fs/cgroup/%s%s" % (ctrl, "" if path == "/" else path)
		    return None
		def write(path, s):
		    fd = os.open(path, os.O_WRONLY)
		    try:
		        os.write(fd, s.encode())
		    finally:
		        os.close(fd)
		res = {}
		for ctrl, limits, gap in (("pids", [("pids.max", "4096")], 0), ("pids", [("pids.max", "4096")], 0.05),
		                          ("cpu", [("cpu.cfs_period_us", "100000"), ("cpu.cfs_quota_us", "200000")], 0.05)):
		    name = "%s, %s" % (ctrl, "back to back" if not gap else "%d ms apart" % (gap * 1000))
		    base = own(ctrl)
		    if not base or not os.access(base, os.W_OK):
		        res[name] = {"skipped": "no writable v1 %s hierarchy" % ctrl}
		        continue
		    t = {"mkdir": [], "limits": [], "attach": [], "rmdir": []}
		    for i in range(n):
		        time.sleep(gap)
		        d = "%s/kwbench-%s-%d" % (base, tag, i)
		        r, w = os.pipe()
		        pid = os.fork()
		        if pid == 0:
		            os.close(w)
		            os.read(r, 1)
		            os._exit(0)
		        os.close(r)
		        t0 = time.perf_counter_ns()
		        os.mkdir(d, 0o755)
		        t1 = time.perf_counter_ns()
		        for f, v in limits:
		            write("%s/%s" % (d, f), v)
		        t2 = time.perf_counter_ns()
		        write("%s/cgroup.procs" % d, str(pid))
		        t3 = time.perf_counter_ns()
		        os.close(w)
		        os.waitpid(pid, 0)
		        t4 = time.perf_counter_ns()
		        for _ in range(100):
		            try:
		                os.rmdir(d)
		                break
		            except OSError as e:
		                if e.errno != 16:  # EBUSY
		                    raise
		                time.sleep(0.001)
		        t5 = time.perf_counter_ns()
		        for k, a, b in (("mkdir", t0, t1), ("limits", t1, t2), ("attach", t2, t3), ("rmdir", t4, t5)):
		            t[k].append((b - a) / 1e6)
		    res[name] = {k: {"median_ms": statistics.median(v), "mean_ms": statistics.mean(v),
		                     "p90_ms": sorted(v)[int(0.9 * (len(v) - 1))], "max_ms": max(v)} for k, v in t.items()}
		    res[name]["base"] = base
		    res[name]["n"] = n
		print(json.dumps(res))
	PY
}

count_keyward_cgroups() {
	local n=0 d
	for d in /sys/fs/cgroup/*/keyward-* /sys/fs/cgroup/unified/keyward-*; do
		[ -d "$d" ] && n=$((n + 1))
	done
	echo "$n"
}

# ------------------------------------------------------------------ main ---
main() {
	ensure_tools
	build_keyward
	# Stock settings for the system roots (the certfile case sets its own).
	SSL_ENV_ORIG=$(env | grep -E '^SSL_CERT_(FILE|DIR)=' | tr '\n' ' ' | sed 's/ $//' || true)
	unset SSL_CERT_FILE SSL_CERT_DIR
	WORK=$(mktemp -d /tmp/keyward-sandbox-bench.XXXXXX)
	mkdir -p "$WORK/rounds" "$WORK/ws" "$WORK/home"
	chmod 700 "$WORK/home"
	export KEYWARD_HOME=$WORK/home # the audit log and state of every run go here
	local cg_before cg_after
	cg_before=$(count_keyward_cgroups)
	write_policy
	write_phase_parser
	check_commands
	log "keyward $KEYWARD_REV; work dir $WORK"

	wait_quiet
	LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
	run_rounds
	LOADAVG_END=$(cut -d' ' -f1-3 /proc/loadavg)

	log "breakdown: strace once per command"
	trace_once
	local probes_ok=0
	if [ "$PROBES" = 1 ] || { [ "$PROBES" = auto ] && [ "$(id -u)" -eq 0 ] && command -v perf >/dev/null; }; then
		log "breakdown: uprobes over $TRACE_RUNS runs per keyward case"
		probe_breakdown && probes_ok=1
	fi
	local profile_ok=0
	if [ "$PROFILE_RUNS" -gt 0 ] && command -v perf >/dev/null; then
		log "breakdown: CPU profile over $PROFILE_RUNS runs (policy case)"
		profile_cpu && profile_ok=1
	fi
	local cgroup_ok=0
	if [ "$CGROUP_RUNS" -gt 0 ] && [ "$(id -u)" -eq 0 ]; then
		log "cgroup v1: $CGROUP_RUNS mkdir/limit/attach/rmdir cycles per controller"
		cgroup_micro && cgroup_ok=1
	fi

	cg_after=$(count_keyward_cgroups)
	local date host out
	date=$(date +%F)
	host=$(hostname -s 2>/dev/null || hostname)
	out=$(bench_results_file -sandbox)
	mkdir -p "$(dirname "$out")"
	local landlock run_cgroup
	landlock=$(sed -n 's/.*\(Landlock ABI [0-9]*\).*/\1/p' "$WORK/verbose-none.txt" | head -1)
	# where a run's limits went: v1 (PID 1 moved), v2 (cloned into it), v2 delegated, or none
	run_cgroup=$(sed -n 's/.*limits: .* through \(.*\)$/\1/p; s/.*limits: \(no writable cgroup.*\)$/\1/p' \
		"$WORK/verbose-none.txt" | head -1 | sed 's/keyward-[0-9]*-[0-9a-f]*/keyward-PID-TAG/g')
	{
		echo "date=$(date -u +%FT%TZ)"
		echo "host=$host"
		echo "nproc=$(nproc)"
		echo "cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
		echo "mem=$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
		echo "kernel_r=$(uname -r)"
		echo "kernel=$(uname -srm)"
		echo "os=$(. /etc/os-release && echo "$PRETTY_NAME")"
		echo "uid=$(id -u)"
		echo "cgroups=$(if [ -f /sys/fs/cgroup/cgroup.controllers ]; then echo "v2 only"; else echo "v1 ($(ls /sys/fs/cgroup | tr '\n' ' ' | sed 's/ $//'))"; fi)"
		echo "landlock=${landlock:-unknown}"
		echo "run_cgroup=${run_cgroup:-unknown}"
		echo "keyward_rev=$KEYWARD_REV"
		echo "keyward_build=$(meson introspect --buildoptions "$BUILD" 2>/dev/null |
			"$PY" -c 'import json,sys; o={x["name"]:x["value"] for x in json.load(sys.stdin)}; print("buildtype=%s optimization=%s b_ndebug=%s werror=%s" % (o["buildtype"], o["optimization"], o["b_ndebug"], o["werror"]))')"
		echo "cc=$(cc --version | head -1)"
		local p
		for p in bubblewrap firejail hyperfine strace linux-perf libc6 libssl3 libseccomp2 libevent-2.1-7 libyaml-0-2 libjansson4; do
			echo "pkg_$p=$(dpkg-query -W -f='${Version}' "$p" 2>/dev/null || echo '?')"
		done
		echo "bwrap=$(bwrap --version)"
		echo "firejail=$(firejail --version | head -1)"
		echo "hyperfine=$(hyperfine --version)"
		echo "openssl=$(openssl version 2>/dev/null || echo '?')"
		echo "runs=$RUNS"
		echo "warmup=$WARMUP"
		echo "rounds=$ROUNDS"
		echo "trace_runs=$TRACE_RUNS"
		echo "profile_runs=$PROFILE_RUNS"
		echo "cgroup_runs=$CGROUP_RUNS"
		echo "loadavg=$LOADAVG_START at start, $LOADAVG_END at end"
		echo "busy_start=$BUSY_START"
		echo "discarded_rounds=${DISCARDED:-0}"
		echo "probes=$probes_ok"
		echo "profile=$profile_ok"
		echo "cgroup_micro=$cgroup_ok"
		echo "keyward_cgroups_before=$cg_before"
		echo "keyward_cgroups_after=$cg_after"
		echo "keyward=${KEYWARD#"$ROOT"/}"
		echo "root=$ROOT"
		echo "cmd_true=$(case_cmd true)"
		echo "cmd_bwrap=$(case_cmd bwrap)"
		echo "cmd_firejail=$(case_cmd firejail)"
		echo "cmd_keyward_none=$(case_cmd keyward-none)"
		echo "cmd_keyward_policy=$(case_cmd keyward-policy)"
		echo "cmd_keyward_version=$(case_cmd keyward-version)"
		echo "cmd_keyward_certfile=$(case_cmd keyward-certfile)"
		echo "env_keyward_certfile=$(case_env keyward-certfile)"
		echo "apart=$APART"
		echo "ssl_env=${SSL_ENV_ORIG:-none}"
	} >"$WORK/meta.txt"
	"$PY" - "$WORK" "$out" <<-'PY'
		import glob, json, os, re, statistics, sys
		work, out = sys.argv[1], sys.argv[2]
		meta = {}
		for line in open(f"{work}/meta.txt"):
		    k, _, v = line.rstrip("\n").partition("=")
		    meta[k] = v
		W = "WORK"
		def anon(s):
		    return s.replace(work, W).replace(meta["root"] + "/", "")
		cases = ["true", "bwrap", "firejail", "keyward-none", "keyward-policy", "keyward-certfile", "bwrap-apart", "keyward-none-apart",
		         "keyward-version"]
		label = {"true": "`/bin/true` alone (baseline)", "bwrap": "bubblewrap, the issue's reference",
		         "firejail": "firejail, comparable options (`--noprofile`)",
		         "keyward-none": "`keyward run`, no policy (deny-all)",
		         "keyward-policy": "`keyward run --policy` (2 credentials, 3 routes, limits)",
		         "keyward-certfile": "`keyward run`, no policy, `SSL_CERT_FILE` set to the system bundle",
		         "bwrap-apart": "bubblewrap, runs 100 ms apart",
		         "keyward-none-apart": "`keyward run`, no policy, runs 100 ms apart",
		         "keyward-version": "`keyward --version`: the process start alone, no sandbox"}
		rounds = {c: [] for c in cases}
		for f in sorted(glob.glob(f"{work}/rounds/r*-*.json")):
		    m = re.match(r"r(\d+)-(.+)\.json$", os.path.basename(f))
		    r, c = int(m.group(1)), m.group(2)
		    res = json.load(open(f))["results"][0]
		    cpu = dict(x.split("=") for x in open(f[:-5] + ".cpu").read().split())
		    share = lambda t: 100 * int(cpu[t]) / (int(cpu["nproc"]) * int(cpu["clk_tck"]) * float(cpu["wall"]))
		    rounds[c].append({"round": r, "res": res, "other": share("other"), "kernel": share("kernel"),
		                      "other_t": int(cpu["other"]),
		                      "cap": int(cpu["nproc"]) * int(cpu["clk_tck"]) * float(cpu["wall"])})
		def okmed(rr):
		    return statistics.median(x for x, code in zip(rr["res"]["times"], rr["res"]["exit_codes"]) if code == 0) * 1e3
		def ms(x):
		    return "–" if x is None else ("%.2f ms" % x if x < 100 else "%.0f ms" % x)
		def pooled(c):
		    t = [x * 1e3 for rr in rounds[c] for x, code in zip(rr["res"]["times"], rr["res"]["exit_codes"]) if code == 0]
		    t.sort()
		    return {"n": len(t), "median": statistics.median(t), "mean": statistics.mean(t),
		            "stddev": statistics.stdev(t), "min": t[0], "p95": t[int(0.95 * (len(t) - 1))], "max": t[-1],
		            "user": statistics.mean(rr["res"]["user"] * 1e3 for rr in rounds[c]),
		            "system": statistics.mean(rr["res"]["system"] * 1e3 for rr in rounds[c]),
		            "round_medians": [okmed(rr) for rr in rounds[c]],
		            "failed": sum(1 for rr in rounds[c] for code in rr["res"]["exit_codes"] if code)}
		S = {c: pooled(c) for c in cases}
		base = S["true"]["median"]
		L = []
		p = L.append
		p(f"# keyward benchmark: sandbox start-up, {meta['date'][:10]} on {meta['host']}")
		p("")
		p("Produced by `bench/sandbox.sh`; see bench/README.md (\"Sandbox start-up\") for how to read it.")
		p("")
		p("## Machine and versions")
		p("")
		p("| | |")
		p("|---|---|")
		rows = [("date (UTC)", meta["date"]), ("host", meta["host"]), ("nproc", meta["nproc"]), ("CPU", meta["cpu"]),
		        ("memory", meta["mem"]), ("kernel (`uname -r`)", meta["kernel_r"]), ("OS", meta["os"]),
		        ("user", "root (uid 0)" if meta["uid"] == "0" else "uid " + meta["uid"]),
		        ("cgroups", meta["cgroups"]),
		        ("a run's cgroup (`keyward run -v`: where the limits went)", meta.get("run_cgroup", "unknown")),
		        ("Landlock", meta["landlock"]),
		        ("keyward git rev", meta["keyward_rev"]), (f"keyward build ({meta['keyward'].split('/')[0]})", meta["keyward_build"]),
		        ("compiler", meta["cc"]), ("bubblewrap", f"{meta['bwrap']} (Debian {meta['pkg_bubblewrap']})"),
		        ("firejail", f"{meta['firejail']} (Debian {meta['pkg_firejail']})"),
		        ("hyperfine", f"{meta['hyperfine']} (Debian {meta['pkg_hyperfine']})"),
		        ("strace / perf", f"{meta['pkg_strace']} / {meta['pkg_linux-perf']}"),
		        ("OpenSSL", f"{meta['openssl']} (libssl3 {meta['pkg_libssl3']})"),
		        ("libc6 / libseccomp2 / libevent / libyaml / jansson",
		         " / ".join(meta["pkg_" + k] for k in ("libc6", "libseccomp2", "libevent-2.1-7", "libyaml-0-2", "libjansson4"))),
		        ("`SSL_CERT_*` in the caller's environment", (meta["ssl_env"] or "none") +
		         "; unset for every command but keyward-certfile"),
		        ("load average (1/5/15 min)", meta["loadavg"]),
		        ("CPUs busy with other work just before the runs", meta["busy_start"] + " %"),
		        ("settings", f"hyperfine --warmup {meta['warmup']} --runs {meta['runs']} per command and round, "
		         f"{meta['rounds']} rounds; rounds discarded for other work: {meta['discarded_rounds']}")]
		for k, v in rows:
		    p(f"| {k} | {v} |")
		p("")
		p(f"Wall time of one run as hyperfine measures it (`-N`: no shell; fork, exec and wait included), "
		  f"{len(rounds['true'])} rounds × {S['true']['n'] // max(1, len(rounds['true']))} runs per command, "
		  "the commands interleaved round by round; statistics over all runs pooled.")
		p("")
		p("## Summary")
		p("")
		p("| command | median | mean | stddev | min | p95 | max | median − baseline | CPU user / sys per run | runs (failed) |")
		p("|---|---|---|---|---|---|---|---|---|---|")
		for c in cases:
		    s = S[c]
		    over = "–" if c == "true" else "+" + ms(s["median"] - base)
		    p(f"| {label[c]} | **{ms(s['median'])}** | {ms(s['mean'])} | {ms(s['stddev'])} | {ms(s['min'])} | "
		      f"{ms(s['p95'])} | {ms(s['max'])} | {over} | {s['user']:.1f} / {s['system']:.1f} ms | {s['n']} ({s['failed']}) |")
		p("")
		nf = sum(S[c]["failed"] for c in cases)
		if nf:
		    p(f"{nf} keyward run(s) failed (exit status 125) and are left out of the statistics (CPU user/sys, "
		      "from hyperfine, still include them): keyward names its cgroup `keyward-PID`, and a directory of that "
		      "name left behind by a keyward that was killed makes `mkdir` fail when a new sandbox gets the same "
		      "PID; with limits in the policy keyward then refuses to start, without them it runs without the "
		      f"pids limit. Stale `keyward-*` cgroups on the machine when the runs started: {meta['keyward_cgroups_before']}.")
		    p("")
		b, n, k = S["bwrap"]["median"], S["keyward-none"]["median"], S["keyward-policy"]["median"]
		p("| goal (from the issue) | measured | met? |")
		p("|---|---|---|")
		p(f"| `keyward run` no slower than bubblewrap, proxy and CA included | no policy: {ms(n)} vs {ms(b)} "
		  f"(**{n / b:.1f}×**, +{ms(n - b)}); realistic policy: {ms(k)} (**{k / b:.1f}×**, +{ms(k - b)}) | "
		  f"{'yes' if max(n, k) <= b else '**no**'} |")
		cf = S["keyward-certfile"]["median"]
		p(f"| the same with `SSL_CERT_FILE` set (as in many CI and container images) | {ms(cf)} "
		  f"(**{cf / b:.1f}×**, +{ms(cf - b)}) | {'yes' if cf <= b else '**no**'} |")
		fj = S["firejail"]["median"]
		p(f"| (not a goal) next to firejail | no policy: {ms(n)} vs {ms(fj)} (**{n / fj:.1f}×**); "
		  f"realistic policy: **{k / fj:.1f}×** | – |")
		ba, na = S["bwrap-apart"]["median"], S["keyward-none-apart"]["median"]
		p(f"| the same, launches 100 ms apart (no policy) | {ms(na)} vs {ms(ba)} "
		  f"(**{na / ba:.1f}×**, +{ms(na - ba)}) | {'yes' if na <= ba else '**no**'} |")
		p("")
		p("Medians round by round (ms), and the share of the machine's CPU time used during each hyperfine run "
		  "by other work (\"other\": busy time of the machine that is neither this script's processes, whose "
		  "time includes hyperfine and everything it ran, nor kernel threads) and by kernel threads (includes "
		  "namespace teardown in kworkers that these runs cause). A round whose other work passes 10 % of the "
		  "CPUs over the whole round is discarded and redone. Part of the kernel's work for short-lived "
		  "namespaces is charged to no process and counts as other work even on an idle machine: it is what "
		  "bwrap shows when every other command of its round shows about 0 %.")
		p("")
		p("| command | " + " | ".join(f"round {r['round']}" for r in rounds["true"]) + " |")
		p("|---|" + "---|" * len(rounds["true"]))
		for c in cases:
		    p(f"| {c} | " + " | ".join(f"{okmed(rr):.2f} (other {rr['other']:.0f} %, kernel threads {rr['kernel']:.0f} %)" for rr in rounds[c]) + " |")
		shares = []
		for i in range(len(rounds["true"])):
		    o = sum(rounds[c][i]["other_t"] for c in cases)
		    cap = sum(rounds[c][i]["cap"] for c in cases)
		    shares.append(100 * o / cap)
		p("| other work over the round | " + " | ".join(f"{x:.0f} %" for x in shares) + " |")
		p("")
		p(f"`keyward-*` cgroups present on the machine (`/sys/fs/cgroup/*/keyward-*`, whoever made them) when the "
		  f"script started: {meta['keyward_cgroups_before']}, when it ended: {meta['keyward_cgroups_after']}; each run "
		  "makes and removes its own, so more at the end means cgroups left behind (by these runs or by other "
		  "keyward processes on the machine in the meantime).")
		p("")
		# ---- breakdown
		p("## Where keyward's time goes")
		p("")
		ph = {}
		for c in ("keyward-none", "keyward-policy", "keyward-certfile", "keyward-none-apart"):
		    f = f"{work}/phases-{c}.json"
		    if os.path.exists(f) and os.path.getsize(f) > 0:
		        ph[c] = json.load(open(f))
		if ph:
		    p("### Step by step (uprobes)")
		    p("")
		    nr = ph.get("keyward-none", ph.get("keyward-policy"))["runs"]
		    p(f"uprobes (`perf probe -x keyward|libkeyward.so FUNC` and `FUNC%return`) on keyward's own functions "
		      "(of the same code built without link-time optimisation, which would inline most of them), and the "
		      f"scheduler and cgroup tracepoints, over {nr} runs of each case (`perf record -a`); medians of each step's "
		      "duration and of when it starts, in ms from keyward's exec. The uprobes add a few µs per event.")
		    p("The parent (keyward) and the child (the sandbox's PID 1) run at the same time, so the durations do "
		      "not add up; the \"starts at\" column shows what overlaps. Broadly: the keyward front clones the child "
		      "and writes its uid/gid maps, then loads libkeyward.so while its main thread takes the cgroup lock; "
		      "the child meanwhile builds what every sandbox has. keyward reads the policy, sends the child its "
		      "part, moves it into its cgroup(s) and makes the CA; the child finishes its root, opens the door, "
		      "writes the CA, applies its fences and waits for keyward's go before it starts CMD; keyward starts "
		      "the proxy after the go, while CMD runs, and exits once the sandbox has ended and the proxy has "
		      "drained. Steps that do not exist in the measured revision show –.")
		    p("")
		    p("| who | step | " + " | ".join(f"{c}: duration (starts at)" for c in ph) + " |")
		    p("|---|---|" + "---|" * len(ph))
		    first = next(iter(ph.values()))
		    for i, st in enumerate(first["steps"]):
		        cells = []
		        for c in ph:
		            s = ph[c]["steps"][i]
		            cells.append("–" if s["median_ms"] is None else f"{s['median_ms']:.2f} ({s['start_ms']:.1f})")
		        p(f"| {st['who']} | {st['label']} | " + " | ".join(cells) + " |")
		    p("")
		    p("| moment | " + " | ".join(ph) + " |")
		    p("|---|" + "---|" * len(ph))
		    for i, mk in enumerate(first["marks"]):
		        p(f"| {mk['label']} | " + " | ".join("–" if ph[c]["marks"][i]["median_ms"] is None else
		                                            f"{ph[c]['marks'][i]['median_ms']:.1f} ms" for c in ph) + " |")
		    p("")
		    for c in ph:
		        g = ph[c]
		        cg = g["cgroup"]
		        per = ", ".join(f"{ms(a)} (max {ms(b)})" for a, b in zip(cg["mkdir_to_attached_ms"], cg["mkdir_to_attached_max_ms"]))
		        p(f"- {c}: in {g['gated_by_proxy']} of {g['gated_n']} runs the proxy became ready only after the "
		          "sandbox had already ended (the proxy's start-up is then the critical path). "
		          f"cgroups: {cg['controllers_per_run']:g} controller(s) per run; mkdir → process attached, median "
		          f"per controller in the order made: {per}; whole cgroup step median {ms(cg['per_run_total_ms'])}.")
		    p("")
		cm = f"{work}/cgroup-micro.json"
		if os.path.exists(cm) and os.path.getsize(cm) > 0:
		    m = json.load(open(cm))
		    p("### cgroup v1 alone")
		    p("")
		    p("What keyward does with a v1 controller when it runs as root, done alone in a loop (Python; the "
		      "attached process is a forked child blocked on a pipe): mkdir a child cgroup, write its limits, write "
		      "the pid to `cgroup.procs`, end the process, rmdir. Times in ms:")
		    p("")
		    p("| controller, spacing | runs | mkdir | limits | attach (`cgroup.procs`) | rmdir |")
		    p("|---|---|---|---|---|---|")
		    for ctrl, v in m.items():
		        if "skipped" in v:
		            p(f"| {ctrl} | – | {v['skipped']} | | | |")
		            continue
		        cell = lambda k: f"{v[k]['median_ms']:.3f} (mean {v[k]['mean_ms']:.3f}, p90 {v[k]['p90_ms']:.3f}, max {v[k]['max_ms']:.2f})"
		        p(f"| {ctrl} (`{v['base']}`) | {v['n']} | {cell('mkdir')} | {cell('limits')} | {cell('attach')} | {cell('rmdir')} |")
		    p("")
		    p("Attaching a process takes the cgroup threadgroup lock (a per-CPU rwsem) for writing, which waits "
		      "for an RCU grace period unless a writer held it moments before (so back-to-back attaches are cheap "
		      "and the first one after a pause is not) or the hierarchy is mounted with `favordynmods`.")
		    p("")
		pc = f"{work}/profile-children.txt"
		if os.path.exists(pc) and os.path.getsize(pc) > 0:
		    want = ["cmd_run", "_dl_start", "_dl_relocate_object", "dlopen", "sandbox_spawn", "sandbox_clone",
		            "child_main", "build_root", "build_common", "finish_root",
		            "tls_ca_new_ephemeral", "EVP_PKEY_Q_keygen", "make_ca_cert", "sandbox_start", "sandbox_finish",
		            "sandbox_cgroup_apply",
		            "proxy_main", "gen_build", "tls_client_ctx_new", "X509_STORE_set_default_paths_ex",
		            "X509_load_cert_crl_file_ex", "PEM_X509_INFO_read_bio_ex", "OSSL_DECODER_CTX_new_for_pkey",
		            "tls_server_ctx_new", "audit_open", "audit_close", "gen_unref", "X509_STORE_free",
		            "sandbox_landlock_apply", "sandbox_seccomp_install", "copy_namespaces", "copy_net_ns",
		            "exit_mmap", "do_exit"]
		    got = {}
		    samples = None
		    for line in open(pc):
		        mm = re.match(r"^\s+([\d.]+)%\s+([\d.]+)%\s+\[[.k]\]\s+(\S+)", line)
		        if mm and mm.group(3) not in got:
		            got[mm.group(3)] = (float(mm.group(1)), float(mm.group(2)))
		        sm = re.match(r"^# Samples: (\S+)", line)
		        if sm and samples is None:
		            samples = sm.group(1)
		    cpu = S["keyward-policy"]["user"] + S["keyward-policy"]["system"]
		    p("### CPU profile")
		    p("")
		    p(f"`perf record -F 4999 --call-graph dwarf` over {meta['profile_runs']} runs "
		      f"of the policy case ({samples or '?'} samples of processes named keyward: keyward and the sandbox's "
		      "PID 1 before it execs). Share of those samples with the function on the stack, and that share of "
		      f"the CPU time per run hyperfine measured ({cpu:.1f} ms user+sys, CMD included):")
		    p("")
		    p("| function | share (with callees) | ≈ CPU ms per run |")
		    p("|---|---|---|")
		    for w in want:
		        if w in got:
		            p(f"| `{w}` | {got[w][0]:.1f} % | {got[w][0] * cpu / 100:.1f} |")
		    p("")
		sm = json.load(open(f"{work}/strace-summary.json"))
		p("### One run under strace")
		p("")
		p("`strace -f -tt -T` of one run each (strace slows every system call down, so its times are not the "
		  "figures above; the counts are what it is for):")
		p("")
		p("| | syscalls | tasks (processes + threads) | threads | new mounts (`mount` + `move_mount`) | open_tree / mount_setattr | pivot_root | wall under strace |")
		p("|---|---|---|---|---|---|---|---|")
		for c, v in sm.items():
		    mt = v["mounts"]
		    p(f"| {c} | {v['syscalls']} | {v['tasks']} | {v['threads']} | {v['new_mounts']} | "
		      f"{mt['open_tree']} / {mt['mount_setattr']} | {mt['pivot_root']} | {ms(v['wall_ms'])} |")
		p("")
		p("Most frequent system calls: " + "; ".join(
		    f"{c}: " + ", ".join(f"{k} {n}" for k, n in v["top"][:8]) for c, v in sm.items()) + ".")
		p("")
		p("## What `keyward run -v` says it set up")
		p("")
		for c in ("none", "policy"):
		    p(f"`{c}`:")
		    p("")
		    p("```")
		    p(anon(open(f"{work}/verbose-{c}.txt").read().rstrip()))
		    p("```")
		    p("")
		p("## Exact commands")
		p("")
		p("```")
		p(f"meson setup build-bench-run --buildtype=release -Db_lto=true -Dwerror=false && ninja -C build-bench-run")
		p(f"cd WORK/ws; export KEYWARD_HOME=WORK/home BENCH_GITHUB_TOKEN=ghp_benchMADEUP… BENCH_OPENAI_KEY=sk-benchMADEUP…")
		for c, key in (("true", "cmd_true"), ("bwrap", "cmd_bwrap"), ("firejail", "cmd_firejail"),
		               ("keyward-none", "cmd_keyward_none"),
		               ("keyward-policy", "cmd_keyward_policy"), ("keyward-certfile", "cmd_keyward_certfile"),
		               ("bwrap-apart", "cmd_bwrap"), ("keyward-none-apart", "cmd_keyward_none"),
		               ("keyward-version", "cmd_keyward_version")):
		    envp = meta["env_keyward_certfile"] + " " if c == "keyward-certfile" else ""
		    prep = f"--prepare '{meta['apart']}' " if c.endswith("-apart") else ""
		    p(f"{envp}hyperfine -N --warmup {meta['warmup']} --runs {meta['runs']} {prep}"
		      f"--export-json WORK/rounds/rN-{c}.json -n {c} '{anon(meta[key])}'")
		p("strace -f -tt -T -o WORK/strace-CASE.txt COMMAND          # once per command")
		p("meson setup build-bench-run-trace --buildtype=release -Db_lto=false -Dwerror=false && ninja -C build-bench-run-trace")
		p("perf probe -x build-bench-run-trace/keyward -a kwbench:F=F -a kwbench:F=F%return   # F: sandbox_clone, child_main, …")
		p("perf probe -x build-bench-run-trace/libkeyward.so -a kwbench:F=F -a kwbench:F=F%return   # F: cmd_run, tls_ca_new_ephemeral, …")
		p("perf record -a -e 'kwbench:*' -e sched:sched_process_{exec,exit,fork} -e cgroup:cgroup_{mkdir,rmdir,attach_task} -- sh -c 'for i in …; do COMMAND; done'")
		p("perf record -F 4999 --call-graph dwarf,32768 -- sh -c 'for i in …; do KEYWARD_POLICY_COMMAND; done'")
		p("```")
		p("")
		p("`policy.yaml` (the values of `BENCH_GITHUB_TOKEN` and `BENCH_OPENAI_KEY` are made up):")
		p("")
		p("```yaml")
		p(anon(open(f"{work}/policy.yaml").read().rstrip()))
		p("```")
		p("")
		p("<!-- bench-headline " + json.dumps({"date": meta["date"][:10], "host": meta["host"],
		                                          "loadavg": meta["loadavg"],
		                                          "median_ms": {c: S[c]["median"] for c in cases}}) + " -->")
		open(out, "w").write("\n".join(L))
		# summary on stdout
		print("\nsandbox start-up (median, mean ± stddev):")
		for c in cases:
		    s = S[c]
		    print(f"  {c:15s} {s['median']:8.2f} ms  {s['mean']:8.2f} ± {s['stddev']:.2f} ms  ({s['n']} runs)")
		print(f"  keyward/bwrap: {n / b:.1f}× (no policy), {k / b:.1f}× (policy)")
		print(f"  keyward/firejail: {n / fj:.1f}× (no policy), {k / fj:.1f}× (policy)")
	PY
	log "results: ${out#"$ROOT"/}"
}

main "$@"
