#!/usr/bin/env bash
# `make test`: env-up, every test with target/test-env/env.sh sourced, env-down (also when
# something failed); exits with the first failure's code. KEEP_ENV=1 leaves the environment
# up afterwards.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

teardown() {
  if [[ "${KEEP_ENV:-0}" != 1 ]]; then
    "$here/down.sh" || echo "[test-env] WARNING: env-down failed" >&2
  fi
}
trap teardown EXIT

rc=0
step() {
  echo "==> $*" >&2
  "$@"
  local r=$?
  if ((r != 0)); then
    echo "==> FAILED ($r): $*" >&2
    ((rc == 0)) && rc=$r
  fi
  return 0
}

"$here/up.sh" || exit $?
# shellcheck disable=SC1091
source "$root/target/test-env/env.sh"

step cargo test --workspace --no-fail-fast
step cargo test --manifest-path tests/sample-app/Cargo.toml
# The Kubernetes control plane: rollouts complete, never-ready and crash-looping images fail.
step tests/k8s/smoke.sh
exit "$rc"
