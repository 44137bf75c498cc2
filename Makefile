# tsuba: the two commands are `make demo` and `make test` (see README.md).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

export CARGO_BUILD_JOBS ?= 2
# Every build here is a cold one in CI; incremental state only costs disk (it was 9 GB of target/).
export CARGO_INCREMENTAL ?= 0
export TSUBA_CACHE ?= $(HOME)/.cache/tsuba
ENV_FILE := $(TSUBA_CACHE)/env
HOST_TARGET := x86_64-unknown-linux-gnu
AGENT := target/$(HOST_TARGET)/release/tsuba-agent
TSUBA := target/debug/tsuba
GUEST := out/guest

# Every recipe that needs the set-up paths sources $(ENV_FILE) (written by scripts/setup).
WITH_ENV := set -a && . $(ENV_FILE) && set +a &&

.PHONY: help setup agent cli shim guest demo test lint unit e2e test-firmware bench fuzz fuzz-ci clean

help:
	@echo "make demo   - install what is missing, build, boot a sim-mode confidential guest"
	@echo "make test   - install what is missing, run every test (what CI runs)"
	@echo "make bench  - boot, container-start and size figures for docs/performance.md"
	@echo "make fuzz   - every fuzz target under AFL++ for FUZZ_SECONDS each (default 60)"

setup:
	scripts/setup $(SETUP_FLAGS)

# The demo and the benchmarks run containerd with the installed shim; the tests use their own.
demo bench: SETUP_FLAGS := --install-shim

# The agent is PID 1 of the guest: a static binary with the gnu target (no extra rustup target).
agent:
	RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked \
		-p tsuba-agent --target $(HOST_TARGET)

cli:
	cargo build --locked -p tsuba-cli

# containerd-shim-tsuba-v2 beside target/debug/tsuba: the e2e tests put this folder first on the
# PATH of the containerd they start.
shim:
	cargo build --locked -p tsuba-shim --bin containerd-shim-tsuba-v2

# Release image (no shell) and debug image (adds busybox). Reproducible: same inputs, same bytes.
guest: setup agent cli
	$(WITH_ENV) $(TSUBA) guest build --kernel-package "$$TSUBA_KERNEL_PACKAGE" \
		--agent $(AGENT) --out $(GUEST)/release
	$(WITH_ENV) $(TSUBA) guest build --kernel-package "$$TSUBA_KERNEL_PACKAGE" \
		--agent $(AGENT) --out $(GUEST)/debug --debug --busybox "$$TSUBA_BUSYBOX"

demo: guest
	$(WITH_ENV) scripts/demo

lint:
	cargo fmt --all -- --check
	cargo clippy --locked --workspace --all-targets -- -D warnings
	# The broker as a production build has it: without the insecure-sim feature.
	cargo clippy --locked -p tsuba-kbs --all-targets -- -D warnings
	# The agent, launcher and CLI without their simulated TEE (production builds).
	cargo clippy --locked -p tsuba-agent -p tsuba-attestation-agent -p tsuba-vmm-tee -p tsuba-cli \
		--no-default-features --all-targets -- -D warnings
	# The fuzz targets (their own workspace; dependencies shared through target/), without AFL.
	cd fuzz && cargo fmt --all -- --check
	cd fuzz && CARGO_TARGET_DIR=$(CURDIR)/target cargo clippy --locked --all-targets -- -D warnings

unit:
	cargo nextest run --locked --workspace --exclude tsuba-tests --profile ci
	# Without the insecure-sim feature the broker refuses every insecure evidence option, the
	# launcher every sim mode, and the agent every simulated attester.
	cargo test --locked -p tsuba-kbs --lib
	cargo test --locked -p tsuba-agent -p tsuba-attestation-agent -p tsuba-vmm-tee \
		--no-default-features --lib
	# Every fuzz seed and every past crash, replayed through the targets without AFL.
	cd fuzz && CARGO_TARGET_DIR=$(CURDIR)/target cargo test --locked
	cargo test --locked --workspace --doc

# End-to-end tests: real QEMU, registry, skopeo. They read the paths below.
e2e: guest shim
	$(WITH_ENV) TSUBA_GUEST_DIR=$(CURDIR)/$(GUEST) TSUBA_BIN=$(CURDIR)/$(TSUBA) \
		cargo nextest run --locked -p tsuba-tests --profile ci

test: setup lint unit e2e fuzz-ci

# The recipe's refusals against a tampered loopback mirror (30 s), then two from-scratch builds in
# build directories of different lengths, compared with each other and with amdsev.sha256.
test-firmware:
	firmware/recipe/test-recipe.sh
	firmware/recipe/check-reproducible.sh

bench: guest
	$(WITH_ENV) TSUBA_GUEST_DIR=$(CURDIR)/$(GUEST) bench/boot.sh
	$(WITH_ENV) bench/ctr-run.sh

# Coverage-guided fuzzing (fuzz/, its own workspace; docs/fuzzing.md): builds the targets with
# cargo-afl, runs each under AFL++ for a bounded time, prints execs/s and coverage per target and
# fails on any crash or hang. fuzz-ci is the short run for CI, after replaying the seed corpus and
# every past crash without AFL (fuzz/tests/corpus.rs; the main target/ holds its dependencies).
# The instrumented build lives in the cache, outside the clone: cold it takes about 10 minutes on
# 2 cores, warm seconds.
FUZZ_SECONDS ?= 60
FUZZ_TARGET_DIR := $(TSUBA_CACHE)/fuzz-target
fuzz:
	TSUBA_SETUP_FUZZ=1 scripts/setup
	CARGO_TARGET_DIR=$(FUZZ_TARGET_DIR) fuzz/run.sh $(FUZZ_SECONDS)

fuzz-ci:
	TSUBA_SETUP_FUZZ=1 scripts/setup
	cd fuzz && CARGO_TARGET_DIR=$(CURDIR)/target cargo test --locked
	CARGO_TARGET_DIR=$(FUZZ_TARGET_DIR) fuzz/run.sh 10

clean:
	rm -rf out
	cargo clean
