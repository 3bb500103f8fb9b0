#!/usr/bin/env bash
# `make env-down`: stops what `make env-up` started, found through its pidfiles under
# target/test-env/run, and removes the bridges it created. Nothing else is touched: a Docker
# engine that was already running is left alone. Data (images, registry storage, the
# PostgreSQL cluster) stays for the next env-up; `make env-clean` removes it.
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
source "$here/lib.sh"
source "$here/docker.sh"
source "$here/registry.sh"
source "$here/haproxy.sh"
source "$here/postgres.sh"
source "$here/s3.sh"
source "$here/prometheus.sh"
source "$here/hosts.sh"

"$ROOT/tests/k8s/down.sh" || true
hosts_down
prometheus_down
haproxy_down
registry_down
postgres_down
s3_down
docker_down
rm -f "$ENV_FILE" "$STATE_DIR/sample.env"
log "down"
