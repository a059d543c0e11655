# piste — common tasks. `make test` is the command CI runs (see README).
CARGO ?= cargo
export CARGO_TARGET_DIR ?= $(CURDIR)/target

.PHONY: build test lint fmt bench bench-lint bench-run bench-server demo

build:
	$(CARGO) build --release --bin piste

# Installs missing Debian test dependencies (busybox-static, git) first; needs root for that.
test:
	bash scripts/deps.sh
	$(CARGO) nextest run --workspace --lib --bins --tests --no-fail-fast

# The README's demo: the fixtures/demo pipeline in containers (builds its busybox image first).
demo:
	bash scripts/deps.sh
	bash scripts/demo-image.sh
	$(CARGO) run --release --bin piste -- run -f fixtures/demo/.gitlab-ci.yml

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	# Invariant: pipeline-spec is pure (no async runtime in its dependency tree).
	@if $(CARGO) tree -p pipeline-spec -e normal -i tokio >/dev/null 2>&1; then \
		echo "pipeline-spec must not depend on tokio"; exit 1; fi

fmt:
	$(CARGO) fmt --all

bench: bench-lint bench-run bench-server

bench-lint:
	$(CARGO) bench -p pipeline-spec --bench lint
	$(CARGO) build --release --bin piste
	bash benches/lint-cli.sh

bench-run:
	$(CARGO) build --release --bin piste
	bash benches/run.sh

bench-server:
	$(CARGO) bench --bench server
