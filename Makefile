# The README's commands. `make run` runs the standalone agent on the example configuration;
# `make test` installs what the tests need and runs them all (it is what CI runs).

EXAMPLE_CONFIG := config/examples/standalone
EXAMPLE_ENV    := config/examples/standalone.env

.PHONY: run test crds lint build

## Validate the example configuration, then run the agent on it (Ctrl-C to stop).
run:
	cargo run --release -q -p driftless-agent -- validate --config $(EXAMPLE_CONFIG) --env-file $(EXAMPLE_ENV)
	cargo run --release -q -p driftless-agent -- --log-format text agent --config $(EXAMPLE_CONFIG) --env-file $(EXAMPLE_ENV) --listen 127.0.0.1:9779

## Install every tool the tests use, then run formatting, lints and every test.
test:
	.ci/test.sh

## Regenerate the CRD YAML and the field reference from the Rust types.
crds:
	cargo run -q -p driftless-crds --bin crdgen

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

build:
	cargo build --release --locked -p driftless-agent -p driftless-operator
