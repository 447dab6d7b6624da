# nebula-memory: build, test (host tiers + VM tier), bench, lint, demo.
#
# The cargo target directory lives outside the clone by default, so a fresh clone (CI)
# reuses compiled dependencies and the cached VM kernel: the second run is incremental.
# Override with `make CARGO_TARGET_DIR=target ...`.
export CARGO_TARGET_DIR ?= $(if $(HOME),$(HOME)/.cache/nebula-memory/target,$(CURDIR)/target)
export CARGO_TERM_COLOR ?= never
CARGO ?= cargo

.PHONY: all build deps test host-test vm-test oci-validate bench bench-deps lint fmt demo doc man fuzz

all: build

build:
	$(CARGO) build --all-targets

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --all-targets --features wasm -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps
	python3 tools/modgraph.py src/lib.rs --defs --tests >/dev/null || python3 tools/modgraph.py src/lib.rs --defs --tests
	python3 tools/modgraph.py src/lib.rs --defs --tests --collapse >/dev/null || python3 tools/modgraph.py src/lib.rs --defs --tests --collapse
	python3 tools/modgraph.py src/bin/nebula-ctl/main.rs --defs --tests >/dev/null || python3 tools/modgraph.py src/bin/nebula-ctl/main.rs --defs --tests
	! grep -rn --include='*.rs' -E '^[^/]*\bcrate::' src/sys src/base

fmt:
	$(CARGO) fmt --all

doc:
	$(CARGO) doc --no-deps

# Tier 1 and 2: unit tests and host integration tests (as root where the host allows).
host-test:
	$(CARGO) build --examples
	$(CARGO) test --lib --bins --tests
	$(CARGO) test --doc
	$(CARGO) test --features wasm --test wasm --test levels --test cli_levels
	$(CARGO) test --doc --features wasm

# The misbehaving workloads (examples/escape_*.rs) that the demo and tests/escape_examples.rs run.
ESCAPES = $(patsubst examples/%.rs,$(CARGO_TARGET_DIR)/debug/examples/%,$(wildcard examples/escape_*.rs))

# containerd, ctr and the runc shim, for tests/oci_containerd.rs (tools/vm/deps.sh installs them).
CONTAINERD = /usr/bin/containerd /usr/bin/ctr /usr/bin/containerd-shim-runc-v2

# Tier 3: every test binary in one qemu TCG guest with cgroup v2, NEBULA_TEST_REQUIRE=all.
vm-test:
	$(CARGO) build --examples
	@bins=$$($(CARGO) test --no-run --message-format=json --tests --features wasm 2>/dev/null | \
	  python3 tools/vm/test-binaries.py) || { $(CARGO) test --no-run --tests --features wasm; exit 1; }; \
	echo "vm-test: binaries: $$bins"; \
	VM_EXTRA="$(CARGO_TARGET_DIR)/debug/nebula-ctl $(CARGO_TARGET_DIR)/debug/nebula-runc $(ESCAPES) /usr/bin/script /usr/bin/newuidmap /usr/bin/newgidmap $(CONTAINERD)" tools/vm/vm-test.sh $$bins -- --include-ignored --test-threads=1

# The OCI runtime's peer tests: runtime-tools' validation programs (built offline from
# ../shared/oci with Go from PyPI) against nebula-runc, crun and runc in one VM; fails when
# nebula fails a test that tools/oci/known-failures does not explain. The table:
# $(CARGO_TARGET_DIR)/oci/validation.txt.
oci-validate:
	$(CARGO) build --bin nebula-runc
	tools/oci/validate.sh

# The VM tier's and the hardware level's packages (qemu, busybox-static, cpio, and the OCI
# peers crun, runc, containerd).
deps:
	tools/vm/deps.sh

# make test fuzzes the channel decoder for a bounded time too (FUZZ_SECONDS, 20 s here).
test: deps lint host-test vm-test oci-validate
	$(MAKE) fuzz FUZZ_SECONDS=20

# The peers the benchmarks measure side by side (bubblewrap for the spawn bench).
bench-deps:
	command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -q bubblewrap; } || echo "bench: bubblewrap not installed (the spawn bench skips it)"

bench: bench-deps
	for b in region_alloc channel violation spawn pkey_switch; do $(CARGO) bench --bench $$b || exit 1; done
	$(CARGO) bench --features wasm --bench wasm_instantiate
	$(CARGO) build --release --bin nebula-runc
	tools/oci/bench.sh

# Fuzz the channel decoder (cargo-fuzz needs nightly flags: RUSTC_BOOTSTRAP lets the one
# stable toolchain here accept them). FUZZ_SECONDS bounds the run.
FUZZ_SECONDS ?= 60
# The corpus is kept beside the build cache so later runs start from what earlier ones found.
FUZZ_CORPUS = $(CARGO_TARGET_DIR)/fuzz-corpus/channel_decode
fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	mkdir -p $(FUZZ_CORPUS)
	cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run --target-dir $(CARGO_TARGET_DIR)/fuzz channel_decode \
	  $(FUZZ_CORPUS) -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=512 -print_final_stats=1

man:
	mkdir -p $(CARGO_TARGET_DIR)/man
	$(CARGO) run --quiet --bin nebula-ctl -- man > $(CARGO_TARGET_DIR)/man/nebula-ctl.1
	@echo "man page: $(CARGO_TARGET_DIR)/man/nebula-ctl.1 (man -l to read it)"

demo:
	$(CARGO) build --release --bin nebula-ctl --examples
	$(CARGO) run --release --bin nebula-ctl -- demo
