#!/usr/bin/env bash
# Stops and removes the test Kubernetes cluster that tests/k8s/up.sh started (its processes,
# etcd data and workdir under target/test-env/kwok), and removes target/test-env/k8s.env.
# The built binaries stay in the cache. A no-op when no cluster is there.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cluster_dir="$KWOK_WORKDIR/clusters/$CLUSTER_NAME"
rm -f "$K8S_ENV_FILE"
if [[ ! -d "$cluster_dir" ]]; then
  rm -f "$KUBECONFIG_LINK"
  exit 0
fi

kwokctl="$K8S_BIN_DIR/kwokctl"
log="$ENV_DIR/logs/k8s-down.log"
mkdir -p "$ENV_DIR/logs"
if [[ -x "$kwokctl" ]] &&
  KWOK_WORKDIR="$KWOK_WORKDIR" "$kwokctl" delete cluster --name "$CLUSTER_NAME" \
    --kubeconfig "$KUBECONFIG_LINK" >"$log" 2>&1; then
  k8s_log "cluster $CLUSTER_NAME deleted"
else
  # No kwokctl (cache gone) or it failed: stop what its pidfiles name, ours only.
  k8s_log "kwokctl delete cluster failed or is missing; stopping by pidfile"
  for pidfile in "$cluster_dir"/pids/*.pid; do
    [[ -f "$pidfile" ]] || continue
    pid="$(cat "$pidfile")"
    [[ "$pid" =~ ^[0-9]+$ ]] && kill "$pid" 2>/dev/null || true
  done
fi
rm -rf "$cluster_dir"
rm -f "$KUBECONFIG_LINK"
