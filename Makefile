# keyward: the two commands a new machine needs are `make demo` and `make test`.
# Both install missing Debian packages first (scripts/deps.sh).

PYTHON ?= /usr/bin/python3
BUILD ?= build
ASAN_BUILD ?= build-asan

.PHONY: all deps vectors build test test-build test-unit test-e2e test-valgrind demo clean format-check bench bench-sandbox \
	bench-instructions

all: build

deps:
	@scripts/deps.sh

# Test vectors from the npm registry (tests/vectors/package-lock.json pins
# them), installed into tests/vectors/node_modules, never committed.
VECTORS_STAMP = tests/vectors/node_modules/.package-lock.json
vectors: deps $(VECTORS_STAMP)
$(VECTORS_STAMP): tests/vectors/package-lock.json
	cd tests/vectors && npm ci --ignore-scripts --no-audit --no-fund

# Link-time optimisation lets the compiler inline keyward's small helpers
# (buffers, JSON) across files: 6 % fewer instructions per proxied request
# (bench/README.md). The test builds below leave it off to build faster;
# `make test` runs the end-to-end suite against this build too.
$(BUILD)/build.ninja:
	meson setup $(BUILD) --buildtype=debugoptimized -Db_lto=true

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

$(ASAN_BUILD)/build.ninja:
	meson setup $(ASAN_BUILD) --buildtype=debug -Db_sanitize=address,undefined -Db_lundef=false

# Every suite runs against the ASan+UBSan build: a memory error or
# undefined behaviour anywhere fails the run.
test: deps vectors $(ASAN_BUILD)/build.ninja
	$(MAKE) --no-print-directory format-check
	ninja -C $(ASAN_BUILD)
	KEYWARD_REQUIRE_VECTORS=1 \
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		meson test -C $(ASAN_BUILD) --print-errorlogs
	KEYWARD_BIN=$(CURDIR)/$(ASAN_BUILD)/keyward \
		ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		$(PYTHON) -m pytest -q -p no:cacheprovider tests/e2e
	$(MAKE) --no-print-directory test-build

# The end-to-end suite once more, against the optimised build that `make
# build` makes and people run (link-time optimisation, no sanitizers).
test-build: build
	KEYWARD_BIN=$(CURDIR)/$(BUILD)/keyward $(PYTHON) -m pytest -q -p no:cacheprovider tests/e2e

test-unit: deps vectors $(ASAN_BUILD)/build.ninja
	ninja -C $(ASAN_BUILD)
	KEYWARD_REQUIRE_VECTORS=1 meson test -C $(ASAN_BUILD) --print-errorlogs

test-e2e: deps $(ASAN_BUILD)/build.ninja
	ninja -C $(ASAN_BUILD)
	KEYWARD_BIN=$(CURDIR)/$(ASAN_BUILD)/keyward $(PYTHON) -m pytest -q -p no:cacheprovider tests/e2e

# The unit tests and the end-to-end tests of the proxy and the CLI against a
# build without sanitizers, under valgrind memcheck: any memory error or
# definite/indirect leak fails the run. Slow; not part of `make test`.
# `keyward run` (namespaces, seccomp, Landlock) is left out: see
# docs/testing.md for what runs and why.
VALGRIND_BUILD ?= build-vg
VALGRIND ?= valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect \
	--show-leak-kinds=definite,indirect
# The proxy's hardest paths (corpus, faults, lifecycle, real clients); set
# VALGRIND_E2E=tests/e2e for every file (hours on 2 cores).
VALGRIND_E2E ?= tests/e2e/test_smuggling_corpus.py tests/e2e/test_load_faults.py tests/e2e/test_lifecycle.py \
	tests/e2e/test_clients.py
$(VALGRIND_BUILD)/build.ninja:
	meson setup $(VALGRIND_BUILD) --buildtype=debug

test-valgrind: deps $(VALGRIND_BUILD)/build.ninja
	ninja -C $(VALGRIND_BUILD)
	KEYWARD_VALGRIND=1 meson test -C $(VALGRIND_BUILD) --no-suite fuzz --wrapper "$(VALGRIND)" \
		--timeout-multiplier 20 --print-errorlogs
	KEYWARD_BIN=$(CURDIR)/$(VALGRIND_BUILD)/keyward KEYWARD_WRAPPER="$(VALGRIND)" \
		$(PYTHON) -m pytest -q -p no:cacheprovider $(VALGRIND_E2E)

demo: build
	$(PYTHON) examples/demo.py --keyward $(CURDIR)/$(BUILD)/keyward

format-check:
	clang-format --dry-run --Werror src/*/*.c src/*/*.h tests/unit/*.c fuzz/*.c fuzz/*.h

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(VALGRIND_BUILD)

# Throughput, latency and memory of an optimised build (build-bench) next to
# nginx, Caddy and mitmproxy on loopback (plain HTTP and intercepted HTTPS),
# then sandbox start-up next to bubblewrap and firejail; writes
# bench/results/DATE-HOST.md, DATE-HOST-sandbox.md and headline.svg (see
# bench/README.md). Not part of `make test`.
bench:
	bench/run.sh

# Start-up of `keyward run -- /bin/true` next to bubblewrap (hyperfine);
# writes bench/results/DATE-sandbox-HOST.md (see bench/README.md).
bench-sandbox:
	bench/sandbox.sh

# Instructions per proxied request (callgrind), keyward next to nginx: the
# noise-free figure for comparing two builds; writes
# bench/results/DATE-HOST-instructions.md (see bench/README.md).
bench-instructions:
	bench/instructions.sh

# Coverage-guided fuzzing with libFuzzer (clang): each harness in fuzz/ runs
# FUZZ_SECONDS against its corpus, and inputs that add coverage are merged
# into fuzz/corpus/. `make test` replays those corpora. See docs/fuzzing.md.
FUZZ_SECONDS ?= 60
FUZZ_BUILD ?= build-fuzz
.PHONY: fuzz
fuzz: deps
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_BUILD=$(FUZZ_BUILD) fuzz/run.sh
