#!/usr/bin/env bash
# `make demo`: deploys the sample app to the `local` region on this machine's Docker, behind
# HAProxy, and prints where it answers. Works on a fresh machine: the test environment's
# scripts install and start the engine and HAProxy (as root, with apt) when they are missing.
#
# Run it twice: the second run changes nothing ("Unchanged"); edit regions/local.yaml (say,
# replicas) and run it again for a rolling update.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

echo "==> bringing up Docker and HAProxy (tests/env/up.sh)" >&2
# Only what the demo uses: no registry, database or Kubernetes control plane.
PACKFY_ENV_PARTS="docker haproxy sample" tests/env/up.sh >&2
# shellcheck disable=SC1091
source target/test-env/env.sh

echo "==> preparing the sample app's image context (target/demo/image)" >&2
mkdir -p target/demo/image
cp "$PACKFY_SAMPLE_BIN" target/demo/image/packfy-sample
cp tests/sample-app/Dockerfile target/demo/image/Dockerfile

echo "==> building packfy-deploy" >&2
cargo build --release --quiet

./target/release/packfy-deploy --env production deploy --region local "$@"
echo >&2
echo "==> the sample app answers through HAProxy:" >&2
curl -fsS "http://${PACKFY_HAPROXY_FRONTEND}/"
echo
./target/release/packfy-deploy --env production status --region local
