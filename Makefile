# Palisade: the two commands a newcomer needs.
#   make demo   local end-to-end run on embedded defaults
#   make test   every test (installs what it needs first)

SHELL := /bin/bash
CARGO ?= cargo

.PHONY: demo test setup build lint fmt bench clean

setup:
	@scripts/setup.sh

build: setup
	$(CARGO) build --release --bins

demo: setup
	@scripts/demo.sh

# Lint first (cheap, fails fast), then every test of the default workspace members.
test: setup lint
	$(CARGO) test --workspace --exclude palisade-sensor-ebpf --all-targets --no-fail-fast
	$(CARGO) test --workspace --exclude palisade-sensor-ebpf --doc

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --exclude palisade-sensor-ebpf --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

bench: setup
	@scripts/bench.sh

clean:
	$(CARGO) clean
