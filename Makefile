# The two commands: `make run` (the worker) and `make test` (everything CI checks).
.PHONY: run test setup lint build

build:
	cargo build --release

run: build
	./target/release/mediacms-worker run

setup:
	./scripts/test-setup.sh

lint:
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings

# Every test binary except the fault suite's, which runs through its own script so it can print
# `fault suite: N cases, N survived, N lost`; then the container suite (Docker engine, image
# built from a clean checkout), which prints `container suite: N cases, N passed`.
TESTS := $(patsubst tests/%.rs,--test %,$(filter-out tests/fault_%,$(wildcard tests/*.rs)))

test: setup lint
	./scripts/validate-docker.sh
	cargo test --lib --bins $(TESTS) -- --test-threads=2
	./scripts/fault-suite.sh
	./scripts/container-suite.sh
