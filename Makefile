# The two commands: `make run` (installs what the build needs, builds, and transcodes a clip it
# makes with MediaCMS's default ladder: the whole job, no services) and `make test` (everything CI
# checks). `make worker` runs the Celery worker against the services named in the environment.
.PHONY: run worker test setup lint build

build:
	./scripts/setup-build.sh
	cargo build --release

run: build
	./target/release/mediacms-worker transcode --out target/demo

worker: build
	./target/release/mediacms-worker run

setup:
	./scripts/test-setup.sh

lint:
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings

# Every test binary except the fault suite's, which runs through its own script so it can print
# `fault suite: N cases, N survived, N lost`; then the differential suite against the real
# MediaCMS (`mediacms suite: N media, N identical, N allowed differences, 0 unexplained`); then the
# container suite (Docker engine, image built from a clean checkout): `container suite: N cases, N passed`.
TESTS := $(patsubst tests/%.rs,--test %,$(filter-out tests/fault_%,$(wildcard tests/*.rs)))

test: setup lint
	./scripts/validate-docker.sh
	cargo test --lib --bins $(TESTS) -- --test-threads=2
	./scripts/fault-suite.sh
	./scripts/mediacms-suite.sh
	./scripts/container-suite.sh
