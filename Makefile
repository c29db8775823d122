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

test: setup lint
	./scripts/validate-docker.sh
	cargo test --all-targets -- --test-threads=2
