# packfy-deploy — entry points for developers and CI (.ci/run calls `make test`).
#
#   make env-up      bring the real test environment up (idempotent); writes target/test-env/env.sh
#   make env-down    stop everything env-up started (data stays for the next env-up)
#   make env-status  what is up
#   make env-clean   env-down, then remove target/test-env (images, registry, database)
#   make test        env-up, all tests (--no-fail-fast) with env.sh sourced, env-down (KEEP_ENV=1 keeps it up)
#   make lint        rustfmt and clippy, warnings are errors
#   make sample      build the sample app's static binary
#
# Test environment knobs: PACKFY_DOCKERD_COUNT (3), PACKFY_PRIVATE_DOCKERD=1 (ignore a running
# engine), PACKFY_DOCKERD_IPTABLES=0, PACKFY_REGISTRY_PORT, PACKFY_HAPROXY_PORT, PACKFY_PG_PORT.
# See tests/env/*.sh.

SHELL := /bin/bash
CARGO ?= cargo
SAMPLE_MANIFEST := tests/sample-app/Cargo.toml

include bench/config.mk
include bench/backups.mk
include bench/k8s.mk

.PHONY: env-up env-down env-status env-clean test lint sample demo bench bench-env release bench-deploy bench-fleet bench-hosts bench-canary k8s-up k8s-down k8s-smoke

# make env-up → tests/env/up.sh, make k8s-smoke → tests/k8s/smoke.sh, …
env-up env-down env-status: env-%:
	@tests/env/$*.sh

k8s-up k8s-down k8s-smoke: k8s-%:
	@tests/k8s/$*.sh

env-clean: env-down
	rm -rf target/test-env

test:
	@tests/env/test.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) fmt --manifest-path $(SAMPLE_MANIFEST) -- --check
	$(CARGO) clippy --manifest-path $(SAMPLE_MANIFEST) --all-targets -- -D warnings

sample:
	@tests/env/sample-bin.sh

# The README's first command: the sample app on the `local` region, behind HAProxy.
demo:
	@scripts/demo.sh

# Benchmarks write bench/RESULTS.md, each section with the command that produced it.
bench: bench-config bench-deploy bench-fleet bench-hosts

# The release build, and the test environment with it: once per make run, however many
# benchmarks need them.
release:
	@$(CARGO) build --release --quiet

bench-env: release
	@tests/env/up.sh >/dev/null

# make bench-deploy → bench/deploy.sh, make bench-fleet → bench/fleet.sh, make bench-hosts → bench/hosts.sh
bench-deploy bench-fleet bench-hosts: bench-%: bench-env
	@bench/$*.sh

# A bad release against a canary and a rolling deploy with bake (the debug CLI: its figures
# are health checks, bake and analysis windows).
bench-canary:
	@tests/env/up.sh >/dev/null
	@bench/canary.sh
