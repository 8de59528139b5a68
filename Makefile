# task-api: how to build, run, test and ship it. `make help` lists the targets.
# Every target works on a fresh Debian/Ubuntu machine: what it needs, it installs.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

MUSL_TARGET := x86_64-unknown-linux-musl
BINARY := target/$(MUSL_TARGET)/release/task-api
MAX_BINARY_BYTES := 10485760
# Build paths (this checkout, ~/.cargo) stay out of the binary's panic messages.
RELEASE_RUSTFLAGS := --remap-path-prefix=$(CURDIR)=/task-api --remap-path-prefix=$(HOME)/.cargo=/cargo
# /metrics reports the revision it was built from.
export TASK_API_REVISION := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
# ring compiles C: for musl it needs musl-gcc.
export CC_x86_64_unknown_linux_musl := musl-gcc

RUN_PGDATA := .pgdata
# Below the kernel's ephemeral range (32768-60999): a port in it can be held by any outgoing
# connection, or its TIME_WAIT, and PostgreSQL then cannot bind it. `make run` connects to the
# port the cluster runs on, so a cluster an older checkout started on another port still serves.
RUN_PG_PORT := 25432

# cargo-auditable writes the dependency list into the binary (a .dep-v0 section), so
# `cargo audit bin` and image scanners see the crates inside a scratch image.
CARGO_AUDITABLE_VERSION ?= 0.7.7
CARGO_AUDIT_VERSION ?= 0.22.2
# The RustSec database: a snapshot folder when there is one beside the checkout (CI
# here has no GitHub), else cargo-audit fetches the live one.
ADVISORY_DB ?= $(wildcard ../shared/advisory-db)
AUDIT_DB_FLAGS = $(if $(ADVISORY_DB),--db $(ADVISORY_DB) --no-fetch --stale)

.PHONY: help run test build lint audit musl-toolchain clean

## help          list the targets
help:
	@sed -n 's/^## //p' $(MAKEFILE_LIST)

## run           the service on :8000 with a local PostgreSQL it starts itself (data in .pgdata/);
##               with DATABASE_URL set, that database instead
run:
ifdef DATABASE_URL
	cargo run --release -- serve
else
	scripts/pg.sh start $(RUN_PGDATA) $(RUN_PG_PORT)
	scripts/pg.sh createdb $(RUN_PGDATA) tasks
	DATABASE_URL=postgres://postgres:postgres@127.0.0.1:$$(scripts/pg.sh port $(RUN_PGDATA))/tasks \
	  cargo run --release -- serve
endif

## test          the whole test suite against a throwaway PostgreSQL (or TEST_DATABASE_URL)
test:
	scripts/test.sh

## build         the static, stripped musl binary, its dependency list inside (cargo-auditable):
##               target/x86_64-unknown-linux-musl/release/task-api
build: musl-toolchain
	RUSTFLAGS="$(RELEASE_RUSTFLAGS)" cargo auditable build --locked --release --target $(MUSL_TARGET)
	file $(BINARY)
	file $(BINARY) | grep -q 'static' || { echo "not a static binary" >&2; exit 1; }
	@size=$$(stat -c %s $(BINARY)); echo "$(BINARY): $$size bytes"; \
	  test $$size -lt $(MAX_BINARY_BYTES) || { echo "binary over 10 MB" >&2; exit 1; }

## audit         RustSec advisories (cargo-audit) against Cargo.lock and against the list the
##               binary carries; ../shared/advisory-db when it exists, else the live database
audit: build
	command -v cargo-audit >/dev/null || cargo install --locked --debug cargo-audit --version $(CARGO_AUDIT_VERSION)
	cargo audit $(AUDIT_DB_FLAGS)
	cargo audit $(AUDIT_DB_FLAGS) bin $(BINARY)

## lint          rustfmt and clippy, warnings as errors
lint:
	cargo fmt --check
	cargo clippy --locked --all-targets -- -D warnings

# The tools are installed as debug builds: in a third of the time, and they run in a second.
musl-toolchain:
	rustup target list --installed | grep -qx $(MUSL_TARGET) || rustup target add $(MUSL_TARGET)
	command -v musl-gcc >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq musl-tools; }
	command -v file >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq file; }
	command -v cargo-auditable >/dev/null || cargo install --locked --debug cargo-auditable --version $(CARGO_AUDITABLE_VERSION)

# Packaging, benchmark and delivery targets live beside this file, one fragment each.
-include mk/*.mk

## clean         stop the local PostgreSQL and remove build output (keeps .pgdata/)
clean:
	scripts/pg.sh stop $(RUN_PGDATA)
	cargo clean
