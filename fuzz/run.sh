#!/usr/bin/env bash
# `make fuzz`: builds the libFuzzer targets with clang and runs each harness
# for FUZZ_SECONDS against its committed corpus, then merges the inputs that
# add coverage back into fuzz/corpus/<harness>/ (git diff shows them; commit
# what you want to keep). A crash leaves its input in
# $FUZZ_BUILD/fuzz-artifacts/<harness>/ and makes the run fail.
#
# Environment: FUZZ_SECONDS (60), FUZZ_BUILD (build-fuzz), FUZZ_HARNESSES
# (all), FUZZ_JOBS (harnesses run at once, 1), FUZZ_MINIMIZE=1 to also
# rewrite each corpus as the smallest set with the same coverage (seed-*
# files are always kept).
set -euo pipefail

cd "$(dirname "$0")/.."
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_BUILD=${FUZZ_BUILD:-build-fuzz}
FUZZ_JOBS=${FUZZ_JOBS:-1}
FUZZ_HARNESSES=${FUZZ_HARNESSES:-"http1_request http1_response path policy audit_verify encode inject vault exec_output match sigv4 token_response redact"}
MAX_LEN=65536

# ---- clang and the libFuzzer runtime, installed only when missing ----
need=()
for p in clang-14 libclang-rt-14-dev; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
	sudo=""
	if [ "$(id -u)" -ne 0 ]; then
		command -v sudo >/dev/null 2>&1 || { echo "fuzz: need root to install ${need[*]}" >&2; exit 1; }
		sudo="sudo"
	fi
	export DEBIAN_FRONTEND=noninteractive
	$sudo apt-get update -q
	apt-cache policy "${need[@]}"
	$sudo apt-get install -y -q --no-install-recommends "${need[@]}"
fi
CC_FUZZ=$(command -v clang || command -v clang-14)

# ---- build ----
# The library is built at the top level, so its coverage instrumentation
# comes from the build-wide c_args. -Dwerror=false: the warning gate is the
# gcc build (clang warns about things gcc does not, e.g. -Wformat-nonliteral).
if [ ! -f "$FUZZ_BUILD/build.ninja" ]; then
	CC="$CC_FUZZ" meson setup "$FUZZ_BUILD" --buildtype=debugoptimized -Dfuzzing=true \
		-Db_sanitize=address,undefined -Db_lundef=false -Dwerror=false \
		"-Dc_args=-fsanitize=fuzzer-no-link -Wno-unknown-warning-option"
fi
ninja -C "$FUZZ_BUILD"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

run_one() {
	local h=$1
	local bin="$FUZZ_BUILD/fuzz/fuzz_$h"
	local corpus="fuzz/corpus/$h"
	local new="$FUZZ_BUILD/fuzz-new/$h"
	local art="$FUZZ_BUILD/fuzz-artifacts/$h"
	local log="$FUZZ_BUILD/fuzz-logs/$h.log"
	mkdir -p "$new" "$art" "$(dirname "$log")" "$corpus"
	local status=0
	# New inputs go to $new (the first directory); the corpus is only read.
	"$bin" -max_total_time="$FUZZ_SECONDS" -max_len=$MAX_LEN -timeout=10 -rss_limit_mb=2048 \
		-print_final_stats=1 -artifact_prefix="$art/" "$new" "$corpus" >"$log" 2>&1 || status=$?
	# Keep only what adds coverage to the committed corpus. Edges only
	# (-use_counters=0): hit counts would keep every input that loops once
	# more, and the committed corpus should stay a few hundred files.
	"$bin" -merge=1 -use_counters=0 -max_len=$MAX_LEN "$corpus" "$new" >>"$log" 2>&1 || true
	if [ "${FUZZ_MINIMIZE:-0}" = 1 ]; then
		local min="$FUZZ_BUILD/fuzz-min/$h"
		rm -rf "$min" && mkdir -p "$min"
		cp "$corpus"/seed-* "$min"/ 2>/dev/null || true
		"$bin" -merge=1 -use_counters=0 -max_len=$MAX_LEN "$min" "$corpus" >>"$log" 2>&1
		find "$corpus" -maxdepth 1 -type f ! -name 'seed-*' -delete
		cp -n "$min"/* "$corpus"/
	fi
	local execs
	execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | tail -1 | awk '{print $2}')
	printf 'fuzz %-15s %8ss  %12s execs  corpus %4d files %8d bytes  %s\n' "$h" "$FUZZ_SECONDS" \
		"${execs:-?}" "$(find "$corpus" -type f | wc -l)" "$(cat "$corpus"/* | wc -c)" \
		"$([ $status -eq 0 ] && echo ok || echo "FAILED (see $log, $art)")"
	return $status
}

fail=0
pids=()
for h in $FUZZ_HARNESSES; do
	run_one "$h" &
	pids+=($!)
	if [ ${#pids[@]} -ge "$FUZZ_JOBS" ]; then
		wait "${pids[0]}" || fail=1
		pids=("${pids[@]:1}")
	fi
done
for p in "${pids[@]}"; do
	wait "$p" || fail=1
done
exit $fail
