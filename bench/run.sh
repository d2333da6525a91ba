#!/usr/bin/env bash
# keyward benchmark: throughput, latency and memory of `keyward proxy` on
# loopback, next to nginx, Caddy and mitmproxy doing the same job, for plain
# HTTP and intercepted HTTPS. See bench/README.md.
#
#   bench/run.sh            (or: make bench)
#
# Every server it starts listens on 127.0.0.1 only and is stopped on exit;
# every load run is bounded (wrk -d, fixed loop counts). Results go to
# bench/results/YYYY-MM-DD-HOSTNAME.md and a summary is printed.
#
# Knobs (environment), defaults are the published settings:
#   BENCH_DURATION=5s BENCH_CONNS=32 BENCH_THREADS=2 BENCH_RUNS=3
#   BENCH_TUNNELS=200 BENCH_IDLE="1000 10000" BENCH_MILLION=1000000
#   BENCH_NEWCONNS=4 (client threads opening new connections)
#   BENCH_PERF=auto (auto|0|1)
#   BENCH_REDO=0      rounds redone per case when other work took > 10 %
#                     of the CPUs (0: keep them, and say so; the machine is
#                     shared, and the targets are interleaved anyway)
#   BENCH_SANDBOX=1   then bench/sandbox.sh in its short form (firejail and
#                     bubblewrap next to keyward run), and bench/plot.py
#   BENCH_OUT=path/to/results.md
#   BENCH_REV=REV     build and measure that commit (exported with git
#                     archive) instead of the working tree
#   BENCH_QUIET_WAIT=30   seconds to wait for other jobs to leave the CPUs
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh"
BUILD=$ROOT/build-bench

DURATION=${BENCH_DURATION:-5s}
CONNS=${BENCH_CONNS:-32}
THREADS=${BENCH_THREADS:-2}
RUNS=${BENCH_RUNS:-3}
TUNNELS=${BENCH_TUNNELS:-200}
IDLE=${BENCH_IDLE:-1000 10000}
MILLION=${BENCH_MILLION:-1000000}
NEWCONNS=${BENCH_NEWCONNS:-4}
REDO=${BENCH_REDO:-0}
TARGETS=(direct keyward nginx caddy mitmproxy)
PERF=${BENCH_PERF:-auto}
WARMUP=2s
# The body of the POST runs: the JSON of bench/wrk-post.lua is this long,
# and tlsload -b sends as many bytes.
POST_BYTES=359
SECRET="bench-secret-0123456789abcdef"  # made up; nothing real is ever used here

log() { printf 'bench: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- tools ----
ensure_tools() {
	"$ROOT/scripts/deps.sh"   # keyward's own build dependencies
	local missing=()
	command -v wrk >/dev/null || missing+=(wrk)
	command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
	command -v openssl >/dev/null || missing+=(openssl)
	command -v curl >/dev/null || missing+=(curl)
	[ -x /usr/bin/time ] || missing+=(time)
	command -v python3 >/dev/null || missing+=(python3)
	command -v caddy >/dev/null || missing+=(caddy)
	command -v mitmdump >/dev/null || missing+=(mitmproxy)
	bench_install "${missing[@]}"
	NGINX=$(command -v nginx || echo /usr/sbin/nginx)
}

# Release build (bench_build) in its own directory, so the numbers are for
# optimised code. With BENCH_REV, the source is that commit exported from
# git, so the numbers belong to a revision that others can check out;
# without it, the working tree (uncommitted changes included, and said so
# in the results).
build_keyward() {
	SRC=$ROOT
	if [ -n "${BENCH_REV:-}" ]; then
		bench_export "$BENCH_REV" "$ROOT/build-bench"
		SRC=$BENCH_SRC
		BUILD=$ROOT/build-bench-$BENCH_REVSHORT
		KEYWARD_REV="$BENCH_REVSHORT (BENCH_REV=$BENCH_REV, exported from git)"
	else
		KEYWARD_REV=$(bench_tree_label)
	fi
	bench_build "$BUILD" "$SRC" -Db_ndebug=true # the front and libkeyward.so
	KEYWARD=$BUILD/keyward
	# The HTTPS load client (wrk cannot CONNECT), built with the same flags.
	TLSLOAD=$BUILD/tlsload
	[ "$TLSLOAD" -nt "$BENCH/tlsload.c" ] ||
		cc -O2 -Wall -Wextra -Werror -o "$TLSLOAD" "$BENCH/tlsload.c" -lssl -lcrypto -lpthread
}

# ------------------------------------------------------------ processes ----
PIDS=()
WORK=""
cleanup() {
	local p
	for p in "${PIDS[@]}"; do
		kill "$p" 2>/dev/null || true
	done
	for p in "${PIDS[@]}"; do
		wait "$p" 2>/dev/null || true
	done
	[ -n "$WORK" ] && [ -z "${BENCH_KEEP:-}" ] && rm -rf "$WORK"
	return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_ports() { # n: n distinct free ports on 127.0.0.1
	python3 -c 'import socket, sys
ss = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))' "$1"
}

wait_port() { # port
	local i
	for i in $(seq 300); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.05
	done
	die "nothing listens on 127.0.0.1:$1"
}

# CPU time (clock ticks) used so far by a process and all its children
# that are alive (nginx: master and workers; keyward: one process).
cpu_ticks() { # pid
	local total=0 p f
	for p in "$1" $(pgrep -P "$1" || true); do
		f=$(cat "/proc/$p/stat" 2>/dev/null) || continue
		f=${f##*) }
		set -- $f
		total=$((total + ${12} + ${13}))
	done
	echo "$total"
}

start_nginx() { # name conf -> sets NGINX_PID
	local dir=$WORK/$1
	mkdir -p "$dir/tmp"
	"$NGINX" -p "$dir" -c "$2" -e "$dir/error.log" -g 'daemon off;' &
	NGINX_PID=$!
	PIDS+=("$NGINX_PID")
}

start_caddy() {
	HOME=$WORK/caddy XDG_DATA_HOME=$WORK/caddy XDG_CONFIG_HOME=$WORK/caddy \
		caddy run --config "$WORK/Caddyfile" --adapter caddyfile >"$WORK/caddy/stdout" 2>&1 &
	CDY_PID=$!
	PIDS+=("$CDY_PID")
}

start_mitmproxy() {
	mkdir -p "$WORK/mitm"
	mitmdump -q --listen-host 127.0.0.1 --listen-port "$MITM_PORT" -s "$WORK/mitm_addon.py" \
		--set confdir="$WORK/mitm" --set ssl_verify_upstream_trusted_ca="$WORK/certs/ca.pem" \
		>"$WORK/mitm/stdout" 2>&1 &
	MITM_PID=$!
	PIDS+=("$MITM_PID")
}

KW_PID=""
KW_PORT=""
start_keyward() { # name
	local dir=$WORK/$1
	mkdir -p "$dir/home"
	chmod 700 "$dir/home"
	: >"$dir/stderr"
	KEYWARD_HOME=$dir/home BENCH_TOKEN=$SECRET "$KEYWARD" proxy --policy "$WORK/policy.yaml" \
		--listen 127.0.0.1:0 --audit "$dir/audit.jsonl" --resolve api.test:127.0.0.1 \
		2>"$dir/stderr" >/dev/null &
	KW_PID=$!
	PIDS+=("$KW_PID")
	local i
	for i in $(seq 200); do
		KW_PORT=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$dir/stderr" | head -1) || true
		[ -n "$KW_PORT" ] && break
		kill -0 "$KW_PID" 2>/dev/null || { cat "$dir/stderr" >&2; die "keyward exited"; }
		sleep 0.05
	done
	[ -n "$KW_PORT" ] || { cat "$dir/stderr" >&2; die "keyward did not print its port"; }
	KEYWARD_HOME=$dir/home "$KEYWARD" ca export >"$dir/ca.pem"
}

stop_pid() { # pid
	kill "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
	local keep=() p
	for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
	PIDS=("${keep[@]}")
}

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

# Waits (at most BENCH_QUIET_WAIT seconds, default 30) for the machine to
# be quiet before measuring; with 0 it looks once and does not wait.
wait_quiet() {
	local i busy n=$(((${BENCH_QUIET_WAIT:-30} + 4) / 5))
	[ "$n" -ge 1 ] || n=1
	for i in $(seq "$n"); do
		busy=$(cpu_busy_pct)
		[ "$busy" -le 10 ] && break
		log "CPUs are ${busy}% busy with other work; waiting for quiet ($i/$n)"
		sleep 3
	done
	BUSY_START=$busy
	[ "$busy" -le 10 ] || log "warning: measuring on a busy machine (${busy}% busy); numbers will be noisy"
}

# ---------------------------------------------------------------- setup ----
make_certs() {
	local d=$WORK/certs
	mkdir -p "$d"
	(
		cd "$d"
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
			-out ca.pem -days 2 -subj "/CN=keyward bench CA" 2>/dev/null
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key \
			-out server.csr -subj "/CN=api.test" 2>/dev/null
		echo "subjectAltName=DNS:api.test,IP:127.0.0.1" >ext.cnf
		openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
			-out server.pem -days 2 -extfile ext.cnf 2>/dev/null
	)
}

write_configs() {
	# Upstream: answers every request from memory, no logging.
	cat >"$WORK/upstream.conf" <<-EOF
	worker_processes auto;
	pid $WORK/upstream/nginx.pid;
	events { worker_connections 8192; }
	http {
	    access_log off;
	    client_body_temp_path $WORK/upstream/tmp/body;
	    proxy_temp_path $WORK/upstream/tmp/proxy;
	    fastcgi_temp_path $WORK/upstream/tmp/fastcgi;
	    uwsgi_temp_path $WORK/upstream/tmp/uwsgi;
	    scgi_temp_path $WORK/upstream/tmp/scgi;
	    keepalive_requests 100000000;
	    keepalive_timeout 300s;
	    # /api/check says whether the real credential arrived, without
	    # echoing it: keyward replaces a secret echoed back to the client
	    # with its placeholder (redaction), so an echo would prove nothing.
	    map \$http_authorization \$kw_auth {
	        "Bearer $SECRET" "real-credential";
	        default "other:\$http_authorization";
	    }
	    server {
	        listen 127.0.0.1:$UP_PORT;
	        listen 127.0.0.1:$UPS_PORT ssl;
	        server_name api.test;
	        ssl_certificate $WORK/certs/server.pem;
	        ssl_certificate_key $WORK/certs/server.key;
	        ssl_protocols TLSv1.2 TLSv1.3;
	        default_type text/plain;
	        location = /api/check { return 200 "auth=\$kw_auth\n"; }
	        location / { return 200 "ok, a small fixed body from the upstream\n"; }
	    }
	}
	EOF
	# Comparison: nginx as a reverse proxy doing keyward's job on route (a):
	# only /api/ passes, a bearer credential is attached, upstream
	# connections are kept alive, and every request is logged (keyward
	# writes an audit record per request).
	cat >"$WORK/front.conf" <<-EOF
	worker_processes auto;
	pid $WORK/front/nginx.pid;
	events { worker_connections 8192; }
	http {
	    access_log $WORK/front/access.log;
	    client_body_temp_path $WORK/front/tmp/body;
	    proxy_temp_path $WORK/front/tmp/proxy;
	    fastcgi_temp_path $WORK/front/tmp/fastcgi;
	    uwsgi_temp_path $WORK/front/tmp/uwsgi;
	    scgi_temp_path $WORK/front/tmp/scgi;
	    keepalive_requests 100000000;
	    keepalive_timeout 300s;
	    upstream api {
	        server 127.0.0.1:$UP_PORT;
	        keepalive 64;
	        keepalive_requests 100000000;
	    }
	    upstream api_tls {
	        server 127.0.0.1:$UPS_PORT;
	        keepalive 64;
	        keepalive_requests 100000000;
	    }
	    server {
	        listen 127.0.0.1:$NGX_PORT;
	$(bench_nginx_job http://api "$SECRET")
	        }
	        location / { return 403; }
	    }
	    # HTTPS: nginx cannot intercept CONNECT, so it terminates TLS itself
	    # with a certificate for api.test (the client trusts the bench CA)
	    # and speaks verified TLS to the upstream: the same two TLS hops.
	    server {
	        listen 127.0.0.1:$NGXS_PORT ssl;
	        server_name api.test;
	        ssl_certificate $WORK/certs/server.pem;
	        ssl_certificate_key $WORK/certs/server.key;
	        # nginx 1.22 leaves TLS 1.3 out by default (1.23.4 added it).
	        # keyward and Caddy speak TLS 1.3 to the client, whose resumed
	        # handshakes still make an ECDHE exchange; a TLS 1.2 resumption
	        # skips it, which made nginx look twice as fast at new tunnels.
	        ssl_protocols TLSv1.2 TLSv1.3;
	        ssl_session_cache shared:kwbench:10m;
	$(bench_nginx_job https://api_tls "$SECRET")
	            proxy_ssl_server_name on;
	            proxy_ssl_name api.test;
	            proxy_ssl_verify on;
	            proxy_ssl_trusted_certificate $WORK/certs/ca.pem;
	            proxy_ssl_session_reuse on;
	        }
	        location / { return 403; }
	    }
	}
	EOF
	# Caddy as a credential proxy: the usual Caddyfile pattern, a
	# reverse_proxy with header_up Authorization; an access log like nginx.
	# keepalive_idle_conns_per_host: Caddy 2.6 keeps too few idle upstream
	# connections for 32 clients by default and dials a new (TLS) upstream
	# connection for about every other request (measured: 2,128 in 4 s).
	mkdir -p "$WORK/caddy"
	cat >"$WORK/Caddyfile" <<-EOF
	{
	    admin off
	    auto_https off
	    storage file_system $WORK/caddy/data
	}
	http://:$CDY_PORT {
	    bind 127.0.0.1
	    log {
	        output file $WORK/caddy/access.log
	    }
	    handle /api/* {
	        reverse_proxy 127.0.0.1:$UP_PORT {
	            header_up Authorization "Bearer $SECRET"
	            transport http {
	                keepalive 300s
	                keepalive_idle_conns 64
	                keepalive_idle_conns_per_host 64
	            }
	        }
	    }
	    handle {
	        respond 403
	    }
	}
	https://api.test:$CDYS_PORT {
	    bind 127.0.0.1
	    tls $WORK/certs/server.pem $WORK/certs/server.key
	    log {
	        output file $WORK/caddy/access-tls.log
	    }
	    handle /api/* {
	        reverse_proxy https://127.0.0.1:$UPS_PORT {
	            header_up Authorization "Bearer $SECRET"
	            transport http {
	                tls_trusted_ca_certs $WORK/certs/ca.pem
	                tls_server_name api.test
	                keepalive 300s
	                keepalive_idle_conns 64
	                keepalive_idle_conns_per_host 64
	            }
	        }
	    }
	    handle {
	        respond 403
	    }
	}
	EOF
	# mitmproxy, the interception proxy: an addon sets the header on /api/
	# and refuses the rest; api.test is dialled at 127.0.0.1 (keyward and
	# nginx are told the same with --resolve / the upstream address).
	cat >"$WORK/mitm_addon.py" <<-EOF
	from mitmproxy import http

	SECRET = "$SECRET"


	def server_connect(data):
	    # CONNECT api.test:PORT (HTTPS): the tunnel's server is dialled at
	    # 127.0.0.1, SNI and certificate check stay api.test.
	    host, port = data.server.address
	    if host == "api.test":
	        data.server.address = ("127.0.0.1", port)


	def request(flow):
	    if flow.request.scheme == "http" and flow.request.host == "api.test":
	        # Plain HTTP: dial 127.0.0.1 and keep the Host header. (Doing
	        # this in server_connect instead makes mitmproxy 8.1 stall on the
	        # sixth request of a kept-alive client connection.)
	        host = flow.request.headers.get("Host")
	        flow.request.host = "127.0.0.1"
	        if host:
	            flow.request.headers["Host"] = host
	    if flow.request.path.startswith("/api/"):
	        flow.request.headers["Authorization"] = "Bearer " + SECRET
	    else:
	        flow.response = http.Response.make(403)
	EOF
	bench_policy "$UP_PORT" >"$WORK/policy.yaml"
	cat >>"$WORK/policy.yaml" <<-EOF
	  - host: api.test
	    port: $UPS_PORT
	    paths: ["/api/**"]
	    credential: bench
	    inject: bearer
	    upstream_ca: $WORK/certs/ca.pem
	    allow_private: true
	EOF
}

# The answer of each server to the check path must carry the credential.
check_injection() {
	local got
	got=$(curl -sS --max-time 5 --noproxy '' -x "http://127.0.0.1:$KW_PORT" "http://api.test:$UP_PORT/api/check")
	[ "$got" = "auth=real-credential" ] || die "keyward did not inject the credential (got: $got)"
	got=$(curl -sS --max-time 5 --noproxy '' -x "http://127.0.0.1:$NGX_PORT" "http://api.test:$UP_PORT/api/check")
	[ "$got" = "auth=real-credential" ] || die "nginx did not inject the credential (got: $got)"
	got=$(curl -sS --max-time 5 --noproxy '' -x "http://127.0.0.1:$KW_PORT" --cacert "$WORK/kw/ca.pem" \
		"https://api.test:$UPS_PORT/api/check")
	[ "$got" = "auth=real-credential" ] || die "keyward (https) did not inject the credential (got: $got)"
	got=$(curl -sS --max-time 5 --noproxy '' -x "http://127.0.0.1:$CDY_PORT" "http://api.test:$UP_PORT/api/check")
	[ "$got" = "auth=real-credential" ] || die "caddy did not inject the credential (got: $got)"
	got=$(curl -sS --max-time 5 --noproxy '' -x "http://127.0.0.1:$MITM_PORT" "http://api.test:$UP_PORT/api/check")
	[ "$got" = "auth=real-credential" ] || die "mitmproxy did not inject the credential (got: $got)"
	local port
	for port in "$NGXS_PORT" "$CDYS_PORT"; do
		got=$(curl -sS --max-time 5 --resolve "api.test:$port:127.0.0.1" --cacert "$WORK/certs/ca.pem" \
			"https://api.test:$port/api/check")
		[ "$got" = "auth=real-credential" ] || die "the TLS front on :$port did not inject the credential (got: $got)"
	done
	got=$(curl -sS --max-time 5 --noproxy '' -x "http://127.0.0.1:$MITM_PORT" --cacert "$MITM_CA" \
		"https://api.test:$UPS_PORT/api/check")
	[ "$got" = "auth=real-credential" ] || die "mitmproxy (https) did not inject the credential (got: $got)"
}

# ------------------------------------------------------------- measuring ---
port_of() { # target
	case $1 in
	direct) echo "$UP_PORT" ;;
	keyward) echo "$KW_PORT" ;;
	nginx) echo "$NGX_PORT" ;;
	caddy) echo "$CDY_PORT" ;;
	mitmproxy) echo "$MITM_PORT" ;;
	esac
}

pid_of() { # target
	case $1 in
	direct) echo "$UP_PID" ;;
	keyward) echo "$KW_PID" ;;
	nginx) echo "$NGX_PID" ;;
	caddy) echo "$CDY_PID" ;;
	mitmproxy) echo "$MITM_PID" ;;
	esac
}

# The HTTPS load client's arguments for a target: keyward and mitmproxy
# are asked to CONNECT to api.test:UPS and intercept it (the client trusts
# their CA); nginx and Caddy terminate TLS for api.test themselves (the
# client trusts the bench CA); direct is the TLS upstream itself.
tls_args() { # target
	case $1 in
	direct) echo "-a 127.0.0.1:$UPS_PORT -f $WORK/certs/ca.pem" ;;
	keyward) echo "-x 127.0.0.1:$KW_PORT -a 127.0.0.1:$UPS_PORT -f $WORK/kw/ca.pem" ;;
	nginx) echo "-a 127.0.0.1:$NGXS_PORT -f $WORK/certs/ca.pem" ;;
	caddy) echo "-a 127.0.0.1:$CDYS_PORT -f $WORK/certs/ca.pem" ;;
	mitmproxy) echo "-x 127.0.0.1:$MITM_PORT -a 127.0.0.1:$UPS_PORT -f $MITM_CA" ;;
	esac
}

# CPU time of every server this script runs (upstream and the proxies).
servers_ticks() {
	local t total=0
	for t in "${TARGETS[@]}"; do total=$((total + $(cpu_ticks "$(pid_of "$t")"))); done
	echo "$total"
}

# One load run (wrk or tlsload), its output, and the CPU time the server
# side used; also how much of the machine other work took meanwhile.
measure() { # case target rep seconds out cmd...
	local case=$1 target=$2 rep=$3 secs=$4 out=$5
	shift 5
	local pid before after upb allb statb hz busy ours foreign
	pid=$(pid_of "$target")
	echo "$*" | sed "s|$WORK|WORK|g; s|$ROOT/||g" >"$out.cmd"
	before=$(cpu_ticks "$pid")
	upb=$(cpu_ticks "$UP_PID")
	allb=$(servers_ticks)
	statb=$(head -1 /proc/stat)
	/usr/bin/time -f "%U %S" -o "$out.time" ${WRK_PIN:+taskset -c "$WRK_PIN"} "$@" >"$out" || true
	after=$(cpu_ticks "$pid")
	hz=$(getconf CLK_TCK)
	busy=$(python3 - "$statb" "$(head -1 /proc/stat)" <<-'PY'
		import sys
		a = [int(x) for x in sys.argv[1].split()[1:9]]
		b = [int(x) for x in sys.argv[2].split()[1:9]]
		d = [y - x for x, y in zip(a, b)]
		print(sum(d) - d[3] - d[4])
	PY
	)
	ours=$(($(servers_ticks) - allb))
	ours=$((ours + $(awk -v hz="$hz" '{printf "%d", ($1 + $2) * hz}' "$out.time")))
	foreign=$((busy - ours))
	[ "$foreign" -ge 0 ] || foreign=0
	# the upstream's CPU is part of "direct"'s own; count it once
	[ "$target" = direct ] && upb=$before
	echo "server_ticks=$((after - before)) upstream_ticks=$(($(cpu_ticks "$UP_PID") - upb)) busy_ticks=$busy foreign_ticks=$foreign clk_tck=$hz loadavg=$(cut -d' ' -f1 /proc/loadavg)" >"$out.cpu"
	LAST_FOREIGN_PCT=$((foreign * 100 / ($(nproc) * hz * ${secs%.*})))
}

# One wrk run through a target (plain HTTP, absolute-form requests; GET,
# or with WRK_SCRIPT=wrk-post.lua a POST with a small JSON body).
run_wrk() { # case target rep threads conns
	local out=$WORK/raw/$1-$2-$3.txt
	BENCH_TARGET=api.test:$UP_PORT measure "$1" "$2" "$3" "${DURATION%s}" "$out" \
		wrk -t"$4" -c"$5" -d"$DURATION" --timeout 5s --latency -s "$BENCH/${WRK_SCRIPT:-wrk-absolute.lua}" \
		"http://127.0.0.1:$(port_of "$2")/"
	log "$1 $2 #$3: $(awk '/Requests\/sec/ {print $2 " req/s"}' "$out"), other work ${LAST_FOREIGN_PCT}% of the CPUs"
}

# One tlsload run (HTTPS; see tls_args). Extra arguments: -c N, -n, -r.
run_tls() { # case target rep tlsload-args...
	local case=$1 target=$2 rep=$3 out=$WORK/raw/$1-$2-$3.json
	shift 3
	measure "$case" "$target" "$rep" "${DURATION%s}" "$out" \
		"$TLSLOAD" $(tls_args "$target") -s api.test -d "${DURATION%s}" "$@" /api/x
	log "$case $target #$rep: $(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("%.0f req/s, %d errors, %d of %d handshakes resumed" % (r["rps"], r["errors"], r["resumed"], r["handshakes"]))' "$out" 2>/dev/null || echo 'no result'), other work ${LAST_FOREIGN_PCT}% of the CPUs"
}

# Sequential new tunnels with curl: CONNECT, TLS with keyward's minted leaf,
# one request inside, keyward dialing the TLS upstream. One curl process per
# tunnel, so nothing is reused on the client side.
run_tunnels() { # kind count
	local kind=$1 n=$2 i out=$WORK/tunnel-$1.txt
	: >"$out"
	local fmt='%{http_code} %{time_connect} %{time_appconnect} %{time_starttransfer} %{time_total}\n'
	for i in $(seq "$n"); do
		case $kind in
		keyward)
			taskset -c "$PIN" curl -sS -o /dev/null --max-time 10 --noproxy '' -x "http://127.0.0.1:$KW_PORT" \
				--cacert "$WORK/kw/ca.pem" -w "$fmt" "https://api.test:$UPS_PORT/api/x" >>"$out"
			;;
		direct)
			taskset -c "$PIN" curl -sS -o /dev/null --max-time 10 --resolve "api.test:$UPS_PORT:127.0.0.1" \
				--cacert "$WORK/certs/ca.pem" -w "$fmt" "https://api.test:$UPS_PORT/api/x" >>"$out"
			;;
		esac
	done
}

# Many requests inside one intercepted tunnel (curl reuses the connection):
# the per-request cost once the tunnel is up.
run_in_tunnel() { # kind count
	local kind=$1 n=$2 out=$WORK/intunnel-$1.txt
	local fmt='%{http_code} %{time_connect} %{time_appconnect} %{time_starttransfer} %{time_total}\n'
	case $kind in
	keyward)
		taskset -c "$PIN" curl -sS -o /dev/null --max-time 60 --noproxy '' -x "http://127.0.0.1:$KW_PORT" \
			--cacert "$WORK/kw/ca.pem" -w "$fmt" "https://api.test:$UPS_PORT/api/x?[1-$n]" >"$out"
		;;
	direct)
		taskset -c "$PIN" curl -sS -o /dev/null --max-time 60 --resolve "api.test:$UPS_PORT:127.0.0.1" \
			--cacert "$WORK/certs/ca.pem" -w "$fmt" "https://api.test:$UPS_PORT/api/x?[1-$n]" >"$out"
		;;
	esac
}

pin_servers() { # cpu-list
	local p t
	for t in "${TARGETS[@]}"; do
		p=$(pid_of "$t")
		for p in "$p" $(pgrep -P "$p"); do
			taskset -a -p -c "$1" "$p" >/dev/null
		done
	done
}

# RUNS rounds of every target, interleaved (direct, keyward, nginx, caddy,
# mitmproxy, direct, …), so that a slow moment of the shared machine hits
# all of them alike. A round during which other work took more than 10 %
# of the CPUs is done again after waiting for quiet, up to REDO times per
# case; the discarded runs are kept as *.discarded.
run_rounds() { # case wrk|tls runner-args...
	local case=$1 kind=$2 rep t bad extra=0 f
	shift 2
	for rep in $(seq "$RUNS"); do
		while :; do
			bad=0
			for t in "${TARGETS[@]}"; do
				"run_$kind" "$case" "$t" "$rep" "$@"
				[ "$LAST_FOREIGN_PCT" -le 10 ] || bad=1
			done
			[ "$bad" = 1 ] && [ "$extra" -lt "$REDO" ] || break
			extra=$((extra + 1))
			for t in "${TARGETS[@]}"; do
				for f in "$WORK/raw/$case-$t-$rep".*; do
					case $f in *.discarded) ;; *) mv "$f" "$f.$extra.discarded" ;; esac
				done
			done
			log "$case round $rep shared the CPUs with other work: discarded, redoing it"
			wait_quiet
		done
	done
	DISCARDED=$((${DISCARDED:-0} + extra))
}

# RSS of a fresh keyward while it serves a million keep-alive requests (in
# wrk runs of 3 s), sampled after each run: does memory stay flat?
run_million() {
	local out=$WORK/million.tsv total=0 n rss hwm chunk=0
	rss_of() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
	printf 'requests\trss_kib\thwm_kib\n0\t%s\t%s\n' "$(rss_of "$KW_PID" VmRSS)" "$(rss_of "$KW_PID" VmHWM)" >"$out"
	while [ "$total" -lt "$MILLION" ] && [ "$chunk" -lt 200 ]; do
		chunk=$((chunk + 1))
		n=$(BENCH_TARGET=api.test:$UP_PORT wrk -t"$THREADS" -c"$CONNS" -d3s -s "$BENCH/wrk-absolute.lua" \
			"http://127.0.0.1:$KW_PORT/" | awk '/requests in/ {print $1}')
		total=$((total + ${n:-0}))
		rss=$(rss_of "$KW_PID" VmRSS)
		hwm=$(rss_of "$KW_PID" VmHWM)
		printf '%s\t%s\t%s\n' "$total" "$rss" "$hwm" >>"$out"
	done
	log "million: $total requests in $chunk wrk runs; RSS $(sed -n 2p "$out" | cut -f2) KiB at the start, $rss KiB at the end"
}

run_perf() {
	local dur=${DURATION%s}
	# DWARF unwinding: the release build has no frame pointers.
	perf record --call-graph dwarf,16384 -F 499 -p "$KW_PID" -o "$WORK/perf.data" -- sleep "$dur" \
		>/dev/null 2>&1 &
	local perf_pid=$!
	BENCH_TARGET=api.test:$UP_PORT wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" \
		-s "$BENCH/wrk-absolute.lua" "http://127.0.0.1:$KW_PORT/" >/dev/null
	wait "$perf_pid" || true
	perf report -i "$WORK/perf.data" --no-children --sort dso,symbol --stdio --percent-limit 0.7 \
		-g none 2>/dev/null | grep -v '^$' | grep -v '^#' | sed 's/[[:space:]]*-[[:space:]]*-[[:space:]]*$//' |
		head -40 >"$WORK/perf-self.txt" || true
	perf script -i "$WORK/perf.data" -F ip,sym 2>/dev/null | python3 "$BENCH/perf_summary.py" \
		>"$WORK/perf-children.txt" || true
	rm -f "$WORK/perf.data"
}

# ------------------------------------------------------------------ main ---
main() {
	ensure_tools
	build_keyward
	ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
	local n max_idle=0
	for n in $IDLE; do [ "$n" -le "$max_idle" ] || max_idle=$n; done
	[ "$(ulimit -n)" -ge $((max_idle + 256)) ] || die "ulimit -n is $(ulimit -n), need $((max_idle + 256))"

	wait_quiet
	LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
	WORK=$(mktemp -d /tmp/keyward-bench.XXXXXX)
	mkdir -p "$WORK/raw"
	read -r UP_PORT UPS_PORT NGX_PORT NGXS_PORT CDY_PORT CDYS_PORT MITM_PORT < <(free_ports 7)
	make_certs
	write_configs

	start_nginx upstream "$WORK/upstream.conf"
	UP_PID=$NGINX_PID
	start_nginx front "$WORK/front.conf"
	NGX_PID=$NGINX_PID
	start_caddy
	start_mitmproxy
	local port
	for port in "$UP_PORT" "$UPS_PORT" "$NGX_PORT" "$NGXS_PORT" "$CDY_PORT" "$CDYS_PORT" "$MITM_PORT"; do
		wait_port "$port"
	done
	start_keyward kw
	MITM_CA=$WORK/mitm/mitmproxy-ca-cert.pem
	[ -s "$MITM_CA" ] || die "mitmproxy wrote no CA certificate"
	check_injection
	log "upstream :$UP_PORT (tls :$UPS_PORT), keyward :$KW_PORT, nginx :$NGX_PORT (tls :$NGXS_PORT)," \
		"caddy :$CDY_PORT (tls :$CDYS_PORT), mitmproxy :$MITM_PORT; work dir $WORK"

	local rep t
	# (a) throughput and latency under load, then (a1) one connection.
	for t in "${TARGETS[@]}"; do
		BENCH_TARGET=api.test:$UP_PORT wrk -t"$THREADS" -c"$CONNS" -d"$WARMUP" \
			-s "$BENCH/wrk-absolute.lua" "http://127.0.0.1:$(port_of "$t")/" >/dev/null
	done
	run_rounds load wrk "$THREADS" "$CONNS"
	# The same with small JSON POSTs (an LLM API's usual request): the body
	# is forwarded too (keyward sends a small body with its head).
	WRK_SCRIPT=wrk-post.lua run_rounds post wrk "$THREADS" "$CONNS"
	# One connection, with wrk, both proxies and the upstream on one CPU:
	# on a virtual machine, waking an idle CPU costs tens of microseconds
	# per hop and varies run to run by a factor of 3; on one CPU the hops are
	# plain context switches, and what remains is the work per request.
	PIN=$(($(nproc) - 1))
	pin_servers "$PIN"
	WRK_PIN=$PIN
	run_rounds single wrk 1 1
	WRK_PIN=""
	pin_servers "0-$(($(nproc) - 1))"

	# (b) HTTPS under load: CONNECT + TLS through keyward and mitmproxy, a
	# TLS front for nginx and Caddy, kept-alive connections (tlsload).
	for t in "${TARGETS[@]}"; do # warm-up: keyward mints its leaf here
		"$TLSLOAD" $(tls_args "$t") -s api.test -d 1 -c 4 /api/x >/dev/null
	done
	run_rounds tls tls -c "$CONNS"
	run_rounds tls-post tls -c "$CONNS" -b "$POST_BYTES"
	# New connections per second: each request on a new connection (and,
	# through keyward and mitmproxy, a new CONNECT tunnel), the client
	# offering its last TLS session (resumption), then without.
	run_rounds newconn tls -c "$NEWCONNS" -n -r
	run_rounds newconn-full tls -c "$NEWCONNS" -n

	# (b) HTTPS through keyward: new tunnels, then requests in one tunnel.
	log "HTTPS: $TUNNELS new tunnels each, direct and through keyward"
	# on one CPU too, for the reason given above
	pin_servers "$PIN"
	run_tunnels keyward 1 # the first tunnel mints the leaf: reported apart
	mv "$WORK/tunnel-keyward.txt" "$WORK/tunnel-first.txt"
	run_tunnels direct "$TUNNELS"
	run_tunnels keyward "$TUNNELS"
	run_in_tunnel direct 2000
	run_in_tunnel keyward 2000
	pin_servers "0-$(($(nproc) - 1))"

	# Profile (not part of the numbers above).
	local perf_ok=0
	if [ "$PERF" = 1 ] || { [ "$PERF" = auto ] && command -v perf >/dev/null &&
		perf record -o /dev/null -- true >/dev/null 2>&1; }; then
		log "perf: profiling keyward during one more ${DURATION} load run"
		run_perf
		perf_ok=1
	fi
	local audit_lines
	audit_lines=$(wc -l <"$WORK/kw/audit.jsonl")
	stop_pid "$KW_PID"

	# (c) memory per client connection, each count and mode on a fresh proxy.
	local mode
	for n in $IDLE; do
		for mode in silent used; do
			start_keyward "mem-$n-$mode"
			python3 "$BENCH/idle_conns.py" "$KW_PID" 127.0.0.1 "$KW_PORT" api.test "$UP_PORT" "$n" "$mode" \
				>"$WORK/mem-$n-$mode.json"
			log "memory ($n, $mode): $(cat "$WORK/mem-$n-$mode.json")"
			stop_pid "$KW_PID"
		done
	done
	# (d) RSS over a million requests, on a fresh proxy.
	if [ "$MILLION" -gt 0 ]; then
		start_keyward million
		run_million
		MILLION_AUDIT=$(wc -l <"$WORK/million/audit.jsonl")
		stop_pid "$KW_PID"
	fi

	# Everything about the machine and the versions, for the report.
	local date host out
	date=$(date +%F)
	host=$(hostname -s 2>/dev/null || hostname)
	out=$(bench_results_file "" -sandbox) # the sandbox's short form goes beside it
	mkdir -p "$(dirname "$out")"
	{
		echo "date=$(date -u +%FT%TZ)"
		echo "host=$host"
		echo "nproc=$(nproc)"
		echo "cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
		echo "mem=$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
		echo "kernel=$(uname -srm)"
		echo "os=$(. /etc/os-release && echo "$PRETTY_NAME")"
		echo "keyward_rev=$KEYWARD_REV"
		echo "keyward_build=$(meson introspect --buildoptions "$BUILD" 2>/dev/null |
			python3 -c 'import json,sys; o={x["name"]:x["value"] for x in json.load(sys.stdin)}; print("buildtype=%s optimization=%s b_ndebug=%s" % (o["buildtype"], o["optimization"], o["b_ndebug"]))')"
		echo "cc=$(cc --version | head -1)"
		echo "nginx=$("$NGINX" -v 2>&1)"
		echo "caddy=$(caddy version | head -1) (Debian $(dpkg-query -W -f='${Version}' caddy 2>/dev/null || echo '?'))"
		echo "mitmproxy=$(mitmdump --version 2>/dev/null | head -1) (Debian $(dpkg-query -W -f='${Version}' mitmproxy 2>/dev/null || echo '?'))"
		echo "targets=${TARGETS[*]}"
		echo "newconns=$NEWCONNS"
		echo "post_bytes=$POST_BYTES"
		echo "million=$MILLION"
		echo "million_audit_records=${MILLION_AUDIT:-0}"
		echo "wrk=$(wrk -v 2>&1 | head -1 | sed 's/ *Usage.*//')"
		echo "curl=$(curl --version | head -1)"
		echo "openssl=$(openssl version)"
		echo "libevent=$(dpkg-query -W -f='${Version}' libevent-2.1-7 2>/dev/null || echo '?')"
		echo "duration=$DURATION conns=$CONNS threads=$THREADS runs=$RUNS tunnels=$TUNNELS idle=${IDLE// /,}"
		echo "ports=upstream $UP_PORT, upstream tls $UPS_PORT, nginx $NGX_PORT (tls $NGXS_PORT), caddy $CDY_PORT (tls $CDYS_PORT), mitmproxy $MITM_PORT"
		echo "audit_records=$audit_lines"
		echo "perf=$perf_ok"
		echo "loadavg=$LOADAVG_START at start, $(cut -d' ' -f1-3 /proc/loadavg) at end"
		echo "busy_start=$BUSY_START"
		echo "discarded_rounds=${DISCARDED:-0}"
	} >"$WORK/meta.txt"
	cp "$WORK/upstream.conf" "$WORK/front.conf" "$WORK/policy.yaml" "$WORK/Caddyfile" "$WORK/mitm_addon.py" \
		"$WORK/raw/" 2>/dev/null || true
	python3 "$BENCH/report.py" "$WORK" "$out"
	log "results: ${out#"$ROOT"/}"
	[ "${BENCH_SANDBOX:-1}" = 1 ] || return 0

	# Sandbox start-up, short form: 3 interleaved rounds of 100 runs per
	# command, no uprobes, profile or cgroup breakdown (bench/sandbox.sh
	# alone does those). Then the plot of both files.
	cleanup
	PIDS=()
	WORK=""
	local sb=${out%.md}-sandbox.md
	BENCH_RUNS=${BENCH_SANDBOX_RUNS:-100} BENCH_WARMUP=10 BENCH_ROUNDS=3 BENCH_PROBES=0 BENCH_PROFILE_RUNS=0 \
		BENCH_CGROUP_RUNS=0 BENCH_QUIET_WAIT=${BENCH_QUIET_WAIT:-30} BENCH_OUT=$sb BENCH_REDO_MAX=0 \
		"$BENCH/sandbox.sh"
	local svg=$BENCH/results/headline.svg
	[ -z "${BENCH_OUT:-}" ] || svg=${out%.md}.svg
	python3 "$BENCH/plot.py" "$out" "$sb" "$svg"
	log "plot: ${svg#"$ROOT"/}"
}

main "$@"
