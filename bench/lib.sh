# Pieces the bench scripts share; sourced by bench/run.sh,
# bench/sandbox.sh and bench/instructions.sh, which define log().

# Installs those of the Debian packages given that are not installed yet
# (apt-get update first, only when something is missing).
bench_install() { # package...
	local missing=() p
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
	done
	[ ${#missing[@]} -gt 0 ] || return 0
	log "installing ${missing[*]}"
	local sudo=""
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	export DEBIAN_FRONTEND=noninteractive
	$sudo apt-get update -q
	$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# The policy every proxy benchmark gives keyward: the made-up credential
# "bench" (from $BENCH_TOKEN) injected as a bearer token on api.test:PORT,
# plain HTTP. Callers may append routes.
bench_policy() { # port
	cat <<POLICY
version: 1
credentials:
  bench:
    from: env:BENCH_TOKEN
    env: BENCH_TOKEN
    placeholder: kw_bench_placeholder_0123456789abcdef
routes:
  - host: api.test
    port: $1
    scheme: http
    paths: ["/api/**"]
    credential: bench
    inject: bearer
    allow_private: true
POLICY
}

# Where a benchmark writes its results: BENCH_OUT if set, else
# bench/results/DATE-HOST<suffix>.md, or DATE-HOST-N<suffix>.md with the
# first N for which that file, and the file of each companion suffix
# (which the caller writes too), do not exist yet: an earlier results
# file of the same day is never overwritten.
bench_results_file() { # suffix ("", "-sandbox", "-instructions") [companion-suffix...]
	if [ -n "${BENCH_OUT:-}" ]; then
		printf '%s\n' "$BENCH_OUT"
		return
	fi
	local stem slot="" n=2 s taken
	stem=$BENCH/results/$(date -u +%F)-$(hostname -s 2>/dev/null || hostname)
	while :; do
		taken=0
		for s in "$@"; do
			[ ! -e "$stem$slot$s.md" ] || taken=1
		done
		[ "$taken" = 1 ] || break
		slot=-$n
		n=$((n + 1))
	done
	printf '%s\n' "$stem$slot$1.md"
}

# Exports commit REV (any name git knows) into PREFIX-src/SHORT, once, and
# sets BENCH_REVSHORT and BENCH_SRC: numbers then belong to a revision that
# others can check out.
bench_export() { # rev prefix
	BENCH_REVSHORT=$(git -C "$ROOT" rev-parse --short "$1^{commit}") || die "no commit $1"
	BENCH_SRC=$2-src/$BENCH_REVSHORT
	if [ ! -f "$BENCH_SRC/meson.build" ]; then
		rm -rf "$BENCH_SRC"
		mkdir -p "$BENCH_SRC"
		git -C "$ROOT" archive "$BENCH_REVSHORT" | tar -x -C "$BENCH_SRC"
	fi
}

# Builds keyward in BUILD from SRC as every benchmark measures it: -O3
# and link-time optimisation (as `make build`, which is -O2), set again on
# a build folder made before; then ninja. Extra meson options may follow.
# -Dwerror=false: at -O3 GCC 12 reports -Wmaybe-uninitialized false
# positives in src/policy/policy.c that -O2 does not (bench/README.md).
bench_build() { # build src [meson-option...]
	local build=$1 src=$2
	shift 2
	local opts=(-Dbuildtype=release -Db_lto=true -Dwerror=false "$@")
	if [ -f "$build/build.ninja" ]; then
		meson configure "$build" "${opts[@]}" >/dev/null
	else
		meson setup "$build" "$src" "${opts[@]}" >/dev/null
	fi
	ninja -C "$build" >/dev/null
}

# HEAD's short name, and whether the working tree's code differs from it.
bench_tree_label() {
	printf '%s' "$(git -C "$ROOT" rev-parse --short HEAD)"
	git -C "$ROOT" diff --quiet HEAD -- src meson.build meson_options.txt 2>/dev/null ||
		printf ' + uncommitted changes of the working tree'
}

# nginx doing keyward's job, the head of its server block's location:
# proxy /api/ to UPSTREAM with the credential set. The caller closes the
# block (after any directives of its own).
bench_nginx_job() { # upstream-url token
	cat <<NGINX
        location /api/ {
            proxy_pass $1;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$http_host;
            proxy_set_header Authorization "Bearer $2";
NGINX
}
