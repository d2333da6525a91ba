#!/usr/bin/env bash
# keyward benchmark: instructions per proxied request, counted by
# callgrind, for keyward and for nginx doing the same job (plain HTTP,
# bearer credential injected, one record or log line per request). See
# bench/README.md ("Instructions per request").
#
#   bench/instructions.sh [REV...]     (REV "." is the working tree)
#
# Times on a shared 2-vCPU VM move 10-20 % from one run to the next, which
# hides a change worth 5 %. Instruction counts move by under 1 %: this
# script gives the figure to compare two builds by. It measures the working tree,
# or each REV given (exported with git archive and built in
# build-bench-REV), and nginx once.
#
# callgrind runs code on a simulated CPU without SHA-NI, so the SHA-256 of
# the audit chain counts about 20k instructions per request that real
# hardware does in well under a microsecond; the table shows keyward's
# total with and without it. A count is not a time: cache misses and
# system calls are not in it (bench/run.sh measures those).
#
# Knobs: BENCH_SECONDS=10 (counted wrk run, after 2 s of warm-up),
# BENCH_OUT=path/to/results.md, BENCH_KEEP=1 (keep the callgrind files),
# BENCH_LUA=wrk-post.lua (the wrk script in bench/: wrk-absolute.lua, a GET,
# by default; wrk-post.lua sends a POST with a 359-byte JSON body).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh"
SECONDS_COUNTED=${BENCH_SECONDS:-10}
LUA=${BENCH_LUA:-wrk-absolute.lua}
TOKEN="bench-secret-0123456789abcdef" # made up

log() { printf 'instructions: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}
trap 'log "error: a command failed at line $LINENO"' ERR

ensure_tools() {
	"$ROOT/scripts/deps.sh"
	local missing=()
	command -v valgrind >/dev/null || missing+=(valgrind)
	command -v wrk >/dev/null || missing+=(wrk)
	command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
	bench_install "${missing[@]}"
	NGINX=$(command -v nginx || echo /usr/sbin/nginx)
}

# Builds keyward (release, as bench/run.sh does) from the working tree or
# from REV; sets KEYWARD and LABEL.
build_keyward() { # [rev]
	local src=$ROOT build=$ROOT/build-bench
	LABEL="working tree at $(bench_tree_label)"
	if [ -n "${1:-}" ] && [ "$1" != . ]; then
		bench_export "$1" "$ROOT/build-bench"
		src=$BENCH_SRC
		build=$ROOT/build-bench-$BENCH_REVSHORT
		LABEL=$BENCH_REVSHORT
	fi
	bench_build "$build" "$src" -Db_ndebug=true
	KEYWARD=$build/keyward
}

PIDS=()
cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	[ -n "${WORK:-}" ] && [ -z "${BENCH_KEEP:-}" ] && rm -rf "$WORK"
	return 0
}
trap cleanup EXIT

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() { # port seconds
	local i
	for i in $(seq $(($2 * 10))); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.1
	done
	die "nothing listens on port $1 after $2 s"
}

write_configs() {
	mkdir -p "$WORK/up" "$WORK/front" "$WORK/kw"
	local d
	for d in up front; do
		cat >"$WORK/$d.common" <<EOF
    client_body_temp_path $WORK/$d/body;
    proxy_temp_path $WORK/$d/proxy;
    fastcgi_temp_path $WORK/$d/fastcgi;
    uwsgi_temp_path $WORK/$d/uwsgi;
    scgi_temp_path $WORK/$d/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
EOF
	done
	cat >"$WORK/up.conf" <<EOF
worker_processes 1;
pid $WORK/up/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    include $WORK/up.common;
    server {
        listen 127.0.0.1:$UP_PORT;
        default_type text/plain;
        location / { return 200 "ok, a small fixed body from the upstream\n"; }
    }
}
EOF
	# nginx under callgrind: one process, in the foreground
	cat >"$WORK/front.conf" <<EOF
worker_processes 1;
master_process off;
daemon off;
pid $WORK/front/nginx.pid;
events { worker_connections 1024; }
http {
    access_log $WORK/front/access.log;
    include $WORK/front.common;
    upstream api { server 127.0.0.1:$UP_PORT; keepalive 64; }
    server {
        listen 127.0.0.1:$NGX_PORT;
$(bench_nginx_job http://api "$TOKEN")
        }
        location / { return 403; }
    }
}
EOF
	bench_policy "$UP_PORT" >"$WORK/policy.yaml"
}

# Runs "$@" under callgrind, waits for port, warms up, counts
# SECONDS_COUNTED s of one-connection wrk load; prints "Ir requests".
# Runs in this shell (not a subshell), so that cleanup knows its PID.
count() { # name port cmd...
	local name=$1 port=$2 out=$WORK/cg-$1.out
	shift 2
	valgrind --tool=callgrind --callgrind-out-file="$out" "$@" >"$WORK/$name.stdout" 2>"$WORK/$name.stderr" &
	local pid=$!
	PIDS+=("$pid")
	wait_port "$port" 60
	local url="http://127.0.0.1:$port/"
	BENCH_TARGET=api.test:$UP_PORT wrk -t1 -c1 -d2s -s "$BENCH/$LUA" "$url" >/dev/null
	callgrind_control -z "$pid" >/dev/null
	local n
	n=$(BENCH_TARGET=api.test:$UP_PORT wrk -t1 -c1 -d"${SECONDS_COUNTED}s" -s "$BENCH/$LUA" "$url" |
		awk '/requests in/ {print $1}')
	callgrind_control -d "$pid" >/dev/null
	kill "$pid"
	wait "$pid" 2>/dev/null || true
	[ "${n:-0}" -gt 0 ] || die "$name served no request (see $WORK/$name.stderr)"
	# the dump taken after the counted run is part 1 (the file without a
	# number is written at exit)
	[ -f "$out.1" ] || die "callgrind wrote no dump for $name"
	mv "$out.1" "$WORK/cg-$name.counted"
	echo "$(awk '/^(summary|totals):/ {print $2; exit}' "$WORK/cg-$name.counted") $n"
}

# Instructions per request of the functions on keyward's request path
# (inclusive: children counted in).
top_functions() { # name requests
	callgrind_annotate --inclusive=yes "$WORK/cg-$1.counted" 2>/dev/null |
		awk -v n="$2" '/libkeyward\.so\]$/ || /:SHA256_Update / {
			c = $1; gsub(",", "", c)
			fn = $0; sub(/^ *[0-9,]+ *(\([ 0-9.]+%\))? */, "", fn)
			sub(/^\?\?\?:/, "", fn); sub(/ \[.*/, "", fn)
			if (!seen[fn]++ && c / n >= 500 && rows++ < 40) printf "| %s | %.0f |\n", fn, c / n
		}'
}

# The SHA-256 compression of the audit chain: OpenSSL's SHA256_Update and
# SHA256_Final, inclusive (what SHA-NI does in hardware), whatever
# keyward's functions around them are called or inlined into.
sha_per_request() { # name requests
	# awk reads to the end (no exit): an early exit would make
	# callgrind_annotate die of SIGPIPE, which pipefail turns into an error
	callgrind_annotate --inclusive=yes "$WORK/cg-$1.counted" 2>/dev/null |
		awk -v n="$2" '/:SHA256_(Update|Final) / {
				fn = $0; sub(/ \[.*/, "", fn); sub(/.*:/, "", fn)
				if (!seen[fn]++) { c = $1; gsub(",", "", c); sum += c }
			}
			END {printf "%.0f", sum / n}'
}

main() {
	[ -f "$BENCH/$LUA" ] || die "no wrk script bench/$LUA"
	ensure_tools
	WORK=$(mktemp -d /tmp/keyward-insn.XXXXXX)
	UP_PORT=$(free_port)
	NGX_PORT=$(free_port)
	KW_PORT=$(free_port)
	write_configs
	"$NGINX" -p "$WORK/up" -c "$WORK/up.conf" -e "$WORK/up/error.log" -g 'daemon off;' &
	PIDS+=("$!")
	wait_port "$UP_PORT" 10

	local out
	out=$(bench_results_file -instructions)
	local rows="" tops="" rev revs=("$@")
	[ ${#revs[@]} -gt 0 ] || revs=(.)
	for rev in "${revs[@]}"; do
		build_keyward "$rev"
		log "keyward ($LABEL)"
		rm -rf "$WORK/kw/home"
		local ir n sha
		KEYWARD_HOME=$WORK/kw/home BENCH_TOKEN=$TOKEN count "kw-$rev" "$KW_PORT" \
			"$KEYWARD" proxy --policy "$WORK/policy.yaml" --listen "127.0.0.1:$KW_PORT" --workers 1 \
			--audit "$WORK/kw/audit-$rev.jsonl" --resolve api.test:127.0.0.1 >"$WORK/count"
		read -r ir n <"$WORK/count"
		sha=$(sha_per_request "kw-$rev" "$n")
		rows+="| keyward $LABEL | $n | $((ir / n)) | $(((ir / n) - sha)) |"$'\n'
		tops+=$'\n'"### keyward $LABEL"$'\n\n'"| function (inclusive) | instructions per request |"$'\n'"|---|---|"$'\n'
		tops+="$(top_functions "kw-$rev" "$n")"$'\n'
	done
	log "nginx"
	count nginx "$NGX_PORT" "$NGINX" -p "$WORK/front" -c "$WORK/front.conf" -e "$WORK/front/error.log" >"$WORK/count"
	read -r ir n <"$WORK/count"
	rows+="| nginx $("$NGINX" -v 2>&1 | sed 's/.*nginx\///') | $n | $((ir / n)) | – |"$'\n'

	{
		echo "# Instructions per request, $(date -u +%Y-%m-%d) on $(hostname -s)"
		echo
		echo "Produced by \`${BENCH_LUA:+BENCH_LUA=$LUA }bench/instructions.sh${*:+ $*}\` (see bench/README.md). Plain HTTP"
		echo "($LUA: $([ "$LUA" = wrk-post.lua ] && echo "a POST with a 359-byte body" || echo "a GET")), one"
		echo "kept-alive connection (wrk -t1 -c1), ${SECONDS_COUNTED} s counted after 2 s of warm-up; every"
		echo "instruction of the server process (all threads) divided by the requests wrk completed."
		echo "keyward runs one worker and writes its audit records; nginx runs one process and"
		echo "writes its access log. valgrind $(valgrind --version | sed 's/valgrind-//'), $(nproc) CPUs."
		echo
		echo "| server | requests | instructions per request | without the audit chain's SHA-256 |"
		echo "|---|---|---|---|"
		printf '%s' "$rows"
		printf '%s' "$tops"
	} >"$out"
	cat "$out"
	log "results: $out"
}

main "$@"
