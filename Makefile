# Palisade: the two commands a newcomer needs.
#   make demo   local end-to-end run on embedded defaults (ARGS=--tc-source, --log-source, ...)
#   make test   every test (installs what it needs first)

SHELL := /bin/bash
CARGO ?= cargo

.PHONY: demo test setup build lint fmt bench clean fuzz-smoke packages

setup:
	@scripts/setup.sh

build: setup
	$(CARGO) build --release --bins

demo: setup
	@scripts/demo.sh $(ARGS)

# Debian packages of the three binaries (docs/install.md), built with the `dist` profile
# (release optimized across crates; Cargo.toml): the blocker's and the CLI's in target/debian/,
# the sensor's in target/pgo/target/debian/, its build guided by a profile of a training run
# (scripts/pgo-build.sh; about 13 minutes more). `make packages PGO=0` builds the sensor's
# without it, into target/debian/.
PGO ?= 1
packages: setup
	@command -v cargo-deb >/dev/null || $(CARGO) install cargo-deb --locked
	$(CARGO) deb --profile dist -p palisade-cli
	$(CARGO) deb --profile dist -p palisade-blocker
ifeq ($(PGO),0)
	$(CARGO) deb --profile dist -p palisade-sensor
else
	scripts/pgo-build.sh $(CARGO) deb --profile dist -p palisade-sensor
endif

# Lint first (cheap, fails fast), then every test of the default workspace members.
test: setup lint
	$(CARGO) test --workspace --exclude palisade-sensor-ebpf --all-targets --no-fail-fast
	$(CARGO) test --workspace --exclude palisade-sensor-ebpf --doc
	$(MAKE) --no-print-directory fuzz-smoke

# A short run of every fuzz target of the repository (whatever `cargo fuzz list` finds in each
# fuzz crate), FUZZ_SECONDS each, from a throwaway corpus plus the crate's seeds/<target>/ when
# there is one. A crash fails the run and libFuzzer's reproducer is kept in <crate>/fuzz/artifacts/.
# The fuzz crates build once into target/fuzz; the targets exercise safe Rust only, so no
# sanitizer (a panic or a failed assertion is what they find; half the build and run time).
FUZZ_CRATES := sensor wire
FUZZ_SECONDS ?= 12
# The fuzz targets never load eBPF: skip building the kernel object.
FUZZ := AYA_BUILD_SKIP=1 $(CARGO) +nightly fuzz
FUZZ_OPTS := --sanitizer none --target-dir $(CURDIR)/target/fuzz

fuzz-smoke: setup
	@set -euo pipefail; \
	for crate in $(FUZZ_CRATES); do \
	    (cd $$crate && $(FUZZ) build $(FUZZ_OPTS)); \
	    for target in $$(cd $$crate && $(FUZZ) list); do \
	        corpus=$$(mktemp -d); \
	        seeds=$$crate/fuzz/seeds/$$target; \
	        [ -d $$seeds ] && seeds=$(CURDIR)/$$seeds || seeds=; \
	        log=$$corpus.log; \
	        echo "fuzz-smoke: $$crate/$$target for $(FUZZ_SECONDS)s"; \
	        if (cd $$crate && $(FUZZ) run $(FUZZ_OPTS) $$target $$corpus $$seeds -- \
	                -max_total_time=$(FUZZ_SECONDS)) >$$log 2>&1; then \
	            grep -E '^(Done|#[0-9]+ +DONE)' $$log | tail -n 1 || true; \
	            rm -rf $$corpus $$log; \
	        else \
	            cat $$log; rm -rf $$corpus $$log; \
	            echo "fuzz-smoke: $$crate/$$target FAILED" >&2; exit 1; \
	        fi; \
	    done; \
	done

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --exclude palisade-sensor-ebpf --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

bench: setup
	@scripts/bench.sh

clean:
	$(CARGO) clean
