# piste — common tasks. `make test` is the command CI runs (see README).
CARGO ?= cargo
export CARGO_TARGET_DIR ?= $(CURDIR)/target

.PHONY: build test lint fmt bench bench-lint bench-run bench-reuse bench-server bench-gitops bench-image bench-archive demo

build:
	$(CARGO) build --release --bin piste

# Installs what a fresh machine lacks first (Debian packages: needs root; cargo-nextest).
test:
	bash scripts/deps.sh
	command -v cargo-nextest >/dev/null || $(CARGO) install --locked cargo-nextest
	$(CARGO) nextest run --workspace --lib --bins --tests --no-fail-fast

# The README's demo: the fixtures/demo pipeline in containers (builds its busybox image first).
demo:
	bash scripts/deps.sh
	bash scripts/demo-image.sh
	$(CARGO) run --release --bin piste -- run -f fixtures/demo/.gitlab-ci.yml

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	# Invariants (ARCHITECTURE.md): the crate graph states the architecture. `cargo tree -i`
	# prints a path when CRATE depends on DEP (dev-dependencies included).
	@fail=0; for pair in pipeline-spec:tokio scheduler:tokio scheduler:axum scheduler:sqlx \
		scheduler:git2 scheduler:maud runner:sqlx runner:axum runner:maud runner:server \
		git-remote:tokio git-remote:git2 git-remote:runner git-remote:server \
		piste:aws-lc-rs piste:aws-lc-sys piste:openssl-sys; do \
		krate=$${pair%%:*}; dep=$${pair#*:}; \
		if $(CARGO) tree --quiet -p $$krate -i $$dep 2>/dev/null | grep -q .; then \
			echo "invariant broken: \`$$krate\` depends on \`$$dep\` (cargo tree -p $$krate -i $$dep)"; fail=1; fi; \
	done; exit $$fail

fmt:
	$(CARGO) fmt --all

bench: bench-lint bench-run bench-reuse bench-server bench-gitops bench-image bench-archive

bench-lint:
	$(CARGO) bench -p pipeline-spec --bench lint
	$(CARGO) build --release --bin piste
	bash benches/lint-cli.sh

bench-run:
	$(CARGO) build --release --bin piste
	bash benches/run.sh

# A second `piste run --reuse` on the same tree vs the first (issue 12).
bench-reuse:
	$(CARGO) build --release --bin piste
	bash benches/reuse.sh

# 1 GiB incompressible + 1 GiB text through the archiver vs `zstd -1` / `gzip -1`, extraction.
bench-archive:
	$(CARGO) bench -p runner --bench archive

bench-server:
	$(CARGO) bench --bench serve
	bash benches/pg-s3.sh

bench-gitops:
	$(CARGO) bench -p runner --bench gitops

# Image builds: push of a 200 MiB image vs skopeo, re-push, a 1 GiB layer vs gzip -1 (README).
bench-image:
	bash scripts/deps.sh
	$(CARGO) bench -p runner --bench image
