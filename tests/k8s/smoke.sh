#!/usr/bin/env bash
# Proves the test cluster (tests/k8s/up.sh must have run): the real API server, admission,
# deployment controller and scheduler, with kwok's nodes and our Stages.
#   - 3 kwok nodes Ready
#   - a Deployment of 5 replicas, sample:v1 then sample:v2: both rollouts complete
#   - sample:never-ready: new pods Running but never Ready; the rollout does not complete and
#     Progressing becomes False/ProgressDeadlineExceeded (progressDeadlineSeconds 10)
#   - rollout undo: back to sample:v2, complete
#   - sample:crashloop: new pods waiting CrashLoopBackOff, lastState exit code 1, restarts grow
# Exits 1 on any failure; the last line is "N passed, N failed".
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

passed=0 failed=0
ok() { passed=$((passed + 1)); printf 'ok   %s\n' "$*"; }
not_ok() { failed=$((failed + 1)); printf 'FAIL %s\n' "$*"; }
finish() {
  [[ -n "${ns:-}" ]] && "${k[@]}" delete namespace "$ns" --wait=false >/dev/null 2>&1
  echo "$passed passed, $failed failed"
  ((failed == 0))
  exit
}

kubectl_bin="${PACKFY_KUBECTL:-$K8S_BIN_DIR/kubectl}"
if [[ ! -x "$kubectl_bin" || ! -s "$KUBECONFIG_LINK" ]]; then
  not_ok "cluster: no kubectl ($kubectl_bin) or kubeconfig ($KUBECONFIG_LINK); run tests/k8s/up.sh"
  finish
fi
k=("$kubectl_bin" --kubeconfig "$KUBECONFIG_LINK" --request-timeout=10s)

# poll SECONDS CMD...: runs CMD every half second until it succeeds or SECONDS pass.
poll() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.5
  done
}
jp() { "${k[@]}" -n "$ns" get "$1" -o "jsonpath=$2" 2>/dev/null; }

# --- the cluster
if "${k[@]}" get --raw /readyz >/dev/null 2>&1; then
  ok "API server ready ($("${k[@]}" version -o json 2>/dev/null | grep -m1 -o '"gitVersion": *"[^"]*"' | tail -1))"
else
  not_ok "API server not ready"
  finish
fi
ready_nodes="$("${k[@]}" get nodes -l type=kwok --no-headers 2>/dev/null | awk '$2 == "Ready"' | wc -l)"
if ((ready_nodes >= 3)); then ok "$ready_nodes kwok nodes Ready"; else not_ok "only $ready_nodes kwok nodes Ready"; fi

ns="packfy-smoke-$$"
if "${k[@]}" create namespace "$ns" >/dev/null; then ok "namespace $ns"; else not_ok "create namespace $ns"; finish; fi
poll 30 "${k[@]}" -n "$ns" get serviceaccount default >/dev/null 2>&1 || true

# --- v1, then v2: complete
"${k[@]}" -n "$ns" apply -f - >/dev/null <<EOF || not_ok "apply Deployment"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: sample
spec:
  replicas: 5
  progressDeadlineSeconds: 10
  revisionHistoryLimit: 5
  selector:
    matchLabels: {app: sample}
  template:
    metadata:
      labels: {app: sample}
    spec:
      containers:
      - name: app
        image: sample:v1
EOF
t=$SECONDS
if "${k[@]}" -n "$ns" rollout status deployment/sample --timeout=60s >/dev/null 2>&1; then
  ok "sample:v1 rollout complete ($((SECONDS - t))s), $(jp deployment/sample '{.status.readyReplicas}')/5 ready"
else
  not_ok "sample:v1 rollout did not complete: $(jp deployment/sample '{.status}')"
fi
running="$("${k[@]}" -n "$ns" get pods -l app=sample --no-headers 2>/dev/null | awk '$2 == "1/1" && $3 == "Running"' | wc -l)"
if ((running == 5)); then ok "5 pods Running 1/1 on kwok nodes"; else not_ok "$running pods Running 1/1, want 5"; fi

"${k[@]}" -n "$ns" set image deployment/sample app=sample:v2 >/dev/null
t=$SECONDS
if "${k[@]}" -n "$ns" rollout status deployment/sample --timeout=60s >/dev/null 2>&1; then
  ok "sample:v2 rollout complete ($((SECONDS - t))s)"
else
  not_ok "sample:v2 rollout did not complete: $(jp deployment/sample '{.status}')"
fi

# --- never-ready: the deadline passes, Progressing False / ProgressDeadlineExceeded
"${k[@]}" -n "$ns" set image deployment/sample app=sample:never-ready >/dev/null
t=$SECONDS
if "${k[@]}" -n "$ns" rollout status deployment/sample --timeout=45s >/tmp/packfy-smoke-$$.out 2>&1; then
  not_ok "sample:never-ready rollout completed, it must not"
else
  ok "sample:never-ready rollout did not complete ($((SECONDS - t))s): $(tail -1 /tmp/packfy-smoke-$$.out)"
fi
rm -f /tmp/packfy-smoke-$$.out
progressing() {
  [[ "$(jp deployment/sample '{.status.conditions[?(@.type=="Progressing")].status}/{.status.conditions[?(@.type=="Progressing")].reason}')" == "False/ProgressDeadlineExceeded" ]]
}
if poll 30 progressing; then
  ok "Progressing False, reason ProgressDeadlineExceeded ($((SECONDS - t))s after the image change)"
else
  not_ok "Progressing condition: $(jp deployment/sample '{.status.conditions}')"
fi
never_pods="$("${k[@]}" -n "$ns" get pods -l app=sample -o jsonpath='{range .items[?(@.spec.containers[0].image=="sample:never-ready")]}{.status.phase}/{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' 2>/dev/null)"
if [[ -n "$never_pods" ]] && ! grep -qv '^Running/False$' <<<"$never_pods"; then
  ok "never-ready pods Running, not Ready: $(echo $never_pods)"
else
  not_ok "never-ready pods: '$(echo $never_pods)'"
fi
avail="$(jp deployment/sample '{.status.availableReplicas}')"
if ((${avail:-0} >= 4)); then ok "old pods still serve: $avail available"; else not_ok "only ${avail:-0} available during the failed rollout"; fi

# --- undo: back to v2
"${k[@]}" -n "$ns" rollout undo deployment/sample >/dev/null 2>&1
t=$SECONDS
if "${k[@]}" -n "$ns" rollout status deployment/sample --timeout=60s >/dev/null 2>&1 &&
  [[ "$(jp deployment/sample '{.spec.template.spec.containers[0].image}')" == "sample:v2" ]]; then
  ok "rollout undo back to sample:v2 complete ($((SECONDS - t))s)"
else
  not_ok "rollout undo: $(jp deployment/sample '{.spec.template.spec.containers[0].image} {.status}')"
fi

# --- crashloop: CrashLoopBackOff, exit code 1, restarts growing
"${k[@]}" -n "$ns" set image deployment/sample app=sample:crashloop >/dev/null
t=$SECONDS
crash_status() {
  "${k[@]}" -n "$ns" get pods -l app=sample -o jsonpath='{range .items[?(@.spec.containers[0].image=="sample:crashloop")]}{.metadata.name} {.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].state.waiting.reason} {.status.containerStatuses[0].lastState.terminated.exitCode} {.status.containerStatuses[0].ready}{"\n"}{end}' 2>/dev/null
}
crashing() { crash_status | awk '$2 >= 1 && $3 == "CrashLoopBackOff" && $4 == 1 && $5 == "false" { n++ } END { exit !(n >= 1) }'; }
restarted() { crash_status | awk '$2 >= 3 { n++ } END { exit !(n >= 1) }'; }
if poll 20 crashing; then
  ok "crashloop pods waiting CrashLoopBackOff, last exit code 1 ($((SECONDS - t))s)"
else
  not_ok "crashloop pods: $(crash_status | tr '\n' ';')"
fi
if poll 30 restarted; then
  ok "crashloop restartCount grows: $(crash_status | awk '{printf "%s=%s ", $1, $2}')($((SECONDS - t))s)"
else
  not_ok "crashloop restarts: $(crash_status | tr '\n' ';')"
fi
if "${k[@]}" -n "$ns" rollout status deployment/sample --timeout=5s >/dev/null 2>&1; then
  not_ok "sample:crashloop rollout completed, it must not"
else
  ok "sample:crashloop rollout does not complete; $(jp deployment/sample '{.status.availableReplicas}') old pods available"
fi

finish
