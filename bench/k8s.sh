#!/usr/bin/env bash
# `make bench-k8s`: a 200-replica rollout (sample:v1 → v2, maxSurge 50, maxUnavailable 0) on
# kwok nodes, packfy-deploy's `deploy` (apply, Lease lock, release record, watch-based wait)
# against `kubectl apply` + `kubectl rollout status` doing the same change on the same cluster,
# each in its own namespace: wall time and the number of API requests each process made.
#
# The requests are counted by the API server itself: a cluster of its own (`packfy-bench`,
# workdir target/bench-k8s/kwok; the test cluster `packfy` is not touched) runs with an audit
# policy at level Metadata, and every audit event of stage RequestReceived (one per request,
# a watch counts once however long it streams) whose userAgent is the tool's and whose time
# falls within the process's run is one request. Same binaries and Stages as tests/k8s/up.sh.
# Knobs: PACKFY_BENCH_K8S_REPLICAS (200), PACKFY_BENCH_K8S_ROUNDS (3, median wall time),
# PACKFY_KWOK_NODES (enough for both Deployments and a surge: 5, 110 pods each). Writes bench/RESULTS.md section "k8s".
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck disable=SC1091
source bench/lib.sh
# shellcheck disable=SC1091
source tests/k8s/lib.sh

replicas="${PACKFY_BENCH_K8S_REPLICAS:-200}"
rounds="${PACKFY_BENCH_K8S_ROUNDS:-3}"
surge=$(((replicas + 3) / 4)) # 25%, rounded up as Kubernetes does
# Both Deployments stay up, one of them surging: 2 × replicas + surge pods, 110 per kwok node.
nodes="${PACKFY_KWOK_NODES:-$(((2 * replicas + surge + 109) / 110))}"
name=packfy-bench
context="kwok-$name"
work="$root/target/bench-k8s"
log="$work/bench.log"
audit_keep="$work/audit.log"

# A missing prerequisite: under CI=true a failure, else a skip that leaves RESULTS.md alone.
missing() {
  k8s_is_ci && k8s_fail "bench-k8s: $1"
  k8s_log "bench-k8s skipped: $1"
  exit 0
}
command -v python3 >/dev/null || missing "python3 is not installed"
bin="$root/target/release/packfy-deploy"
[[ -x "$bin" ]] || nice -n 10 cargo build --release --quiet || missing "cargo build --release failed"
kbin="$("$K8S_DIR/build.sh")" || missing "building the Kubernetes binaries failed (tests/k8s/build.sh, see above)"

mkdir -p "$work"
: >"$log"
export KWOK_WORKDIR="$work/kwok" KWOK_RUNTIME=binary KWOK_KUBE_VERSION="$K8S_VERSION"
export KWOK_KUBECTL_BINARY="$kbin/kubectl"
export KWOK_BINARY_PREFIX="file:///nonexistent/packfy-no-download"
export KWOK_KUBE_BINARY_PREFIX="$KWOK_BINARY_PREFIX" KWOK_ETCD_BINARY_PREFIX="$KWOK_BINARY_PREFIX"
export KUBECONFIG="$work/kubeconfig"
# kubectl's discovery cache: our own, warmed by the setup below (the server's port is new
# every run), so the measured kubectl runs find it warm as on an operator's machine.
export KUBECACHEDIR="$work/kube-cache"
export PATH="$kbin:$PATH"
cluster_dir="$KWOK_WORKDIR/clusters/$name"
audit="$cluster_dir/logs/audit.log"
kc=("$kbin/kubectl" --context "$context")
tmp="$(mktemp -d)"

down() {
  [[ -d "$cluster_dir" ]] || return 0
  [[ -s "$audit" ]] && cp "$audit" "$audit_keep"
  "$kbin/kwokctl" delete cluster --name "$name" --kubeconfig "$KUBECONFIG" >>"$log" 2>&1 || true
  rm -rf "$cluster_dir"
}
cleanup() {
  down
  rm -rf "$tmp" "$KUBECACHEDIR" "$KUBECONFIG"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
down # what an interrupted run left
rm -rf "$KUBECACHEDIR" "$KUBECONFIG" "$audit_keep"

cat >"$tmp/audit-policy.yaml" <<'YAML'
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
  - level: Metadata
YAML
k8s_log "bench-k8s: creating cluster $name ($nodes kwok nodes, audit at level Metadata)"
"$kbin/kwokctl" create cluster --name "$name" --runtime binary \
  --kube-apiserver-binary "$kbin/kube-apiserver" \
  --kube-controller-manager-binary "$kbin/kube-controller-manager" \
  --kube-scheduler-binary "$kbin/kube-scheduler" \
  --etcd-binary "$kbin/etcd" --kwok-controller-binary "$kbin/kwok" \
  --config "$K8S_DIR/stages/stages.yaml" \
  --kube-audit-policy "$tmp/audit-policy.yaml" \
  --kubeconfig "$KUBECONFIG" --timeout 120s --wait 120s >>"$log" 2>&1 ||
  k8s_fail "kwokctl create cluster $name failed (logs: $cluster_dir/logs)" "$log"
"$kbin/kwokctl" scale node --name "$name" --replicas "$nodes" \
  --param '.nodeIPs = ["127.0.0.1"]' >>"$log" 2>&1 || k8s_fail "kwokctl scale node failed" "$log"
"${kc[@]}" wait --for=condition=Ready node -l type=kwok --timeout=60s >>"$log" 2>&1 ||
  k8s_fail "the kwok nodes of $name did not become Ready" "$log"
[[ -s "$audit" ]] || k8s_fail "no audit log at $audit: the policy was not applied" "$log"

ns_kubectl=bench-kubectl ns_packfy=bench-packfy
for ns in "$ns_kubectl" "$ns_packfy"; do
  "${kc[@]}" create namespace "$ns" >>"$log"
  for _ in $(seq 1 60); do
    "${kc[@]}" -n "$ns" get serviceaccount default >/dev/null 2>&1 && break
    sleep 0.5
  done
done

# The kubectl side: a Deployment of the same shape as packfy-deploy's (replicas, surge, deadline).
manifest() {
  cat <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: $ns_kubectl}
spec:
  replicas: $replicas
  progressDeadlineSeconds: 600
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: $surge, maxUnavailable: 0}}
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - {name: web, image: "sample:$1", ports: [{containerPort: 8080}]}
YAML
}
# The packfy side: one region on this cluster.
mkdir -p "$tmp/regions"
cat >"$tmp/regions/bench.yaml" <<YAML
app: packfy
currency: USD
target:
  kubernetes:
    context: $context
    namespace: $ns_packfy
services:
  web:
    image: sample
    replicas: $replicas
    ports: [{container: 8080}]
    rollout: {max_surge: $surge, max_unavailable: 0, progress_deadline: 10m, bake: 0s}
YAML

# Every measured command appends "LABEL START END" (epoch seconds) to $windows.
windows="$tmp/windows"
: >"$windows"
timed() {
  local label=$1 t0 t1
  shift
  t0=$EPOCHREALTIME
  "$@" >>"$log" 2>&1 || k8s_fail "bench-k8s: $label failed: $*" "$log"
  t1=$EPOCHREALTIME
  echo "$label $t0 $t1" >>"$windows"
}
kubectl_to() { # VERSION ROUND
  manifest "$1" >"$tmp/web.yaml"
  timed "kubectl_apply_$2" "${kc[@]}" apply -f "$tmp/web.yaml"
  timed "kubectl_status_$2" "${kc[@]}" -n "$ns_kubectl" rollout status deployment/web --timeout=10m
}
packfy_to() { # VERSION ROUND
  timed "packfy_deploy_$2" "$bin" --regions-dir "$tmp/regions" deploy --region bench --version "$1" --no-build
}
settle() { # until the old pods are gone: each run starts on a quiet cluster
  local want have
  for _ in $(seq 1 120); do
    want=$("${kc[@]}" get deployments -A -o 'jsonpath={range .items[*]}{.spec.replicas}{"\n"}{end}' | awk '{s += $1} END {print s + 0}')
    have=$("${kc[@]}" get pods -A --no-headers 2>/dev/null | awk '$4 == "Running"' | wc -l)
    [[ "$have" == "$want" && "$("${kc[@]}" get pods -A --no-headers | wc -l)" == "$want" ]] && return
    sleep 1
  done
  k8s_fail "bench-k8s: the cluster did not settle ($have of $want pods running)" "$log"
}

k8s_log "bench-k8s: first rollouts (0 → $replicas) of both, then $rounds rounds of a new version each"
# Round 0 creates the Deployments; it is reported apart (no old pods to replace).
kubectl_to v0 0
settle
packfy_to v0 0
settle
for r in $(seq 1 "$rounds"); do
  # Alternate who goes first, so a load swing on the shared machine hits both alike.
  if ((r % 2)); then
    kubectl_to "v$r" "$r"; settle; packfy_to "v$r" "$r"; settle
  else
    packfy_to "v$r" "$r"; settle; kubectl_to "v$r" "$r"; settle
  fi
  k8s_log "bench-k8s: round $r of $rounds done"
done
[[ "$("${kc[@]}" -n "$ns_packfy" get deployment packfy-web -o 'jsonpath={.spec.template.spec.containers[0].image}')" == "sample:v$rounds" ]] ||
  k8s_fail "packfy-deploy did not leave sample:v$rounds running" "$log"
load="$(cut -d' ' -f1-3 /proc/loadavg)"
down

# Requests per window from the audit log; prints shell assignments (values shell-quoted).
eval "$(python3 - "$audit_keep" "$windows" "$rounds" <<'PY'
import json, sys, shlex, statistics, collections
from datetime import datetime
audit, wfile, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
windows = {}
for line in open(wfile):
    label, t0, t1 = line.split()
    windows[label] = (float(t0), float(t1))
system = ("kube-controller-manager", "kube-scheduler", "kwok-controller", "kube-apiserver")
hits = collections.defaultdict(list)
for line in open(audit):
    e = json.loads(line)
    if e["stage"] != "RequestReceived":
        continue
    ua = e.get("userAgent", "")
    if ua.startswith(system) or e["user"]["username"].startswith("system:"):
        continue
    ts = datetime.strptime(e["requestReceivedTimestamp"][:-1] + "+0000", "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
    for label, (t0, t1) in windows.items():
        if t0 <= ts <= t1 and ua.startswith("kubectl") == label.startswith("kubectl"):
            hits[label].append(e)
out = {}
def kind(e):
    o = e.get("objectRef") or {}
    res = o.get("resource", e["requestURI"].split("?")[0])
    if o.get("subresource"):
        res += "/" + o["subresource"]
    return f'{e["verb"]}{" (dry run)" if "dryRun=" in e["requestURI"] else ""} {res}'
for label, (t0, t1) in windows.items():
    out[f"req_{label}"] = len(hits[label])
    out[f"secs_{label}"] = t1 - t0
def med(xs):
    return statistics.median(xs)
rs = range(1, rounds + 1)
for side, parts in (("kubectl", ("apply", "status")), ("packfy", ("deploy",))):
    for part in parts:
        out[f"med_secs_{side}_{part}"] = med([out[f"secs_{side}_{part}_{r}"] for r in rs])
        out[f"med_req_{side}_{part}"] = med([out[f"req_{side}_{part}_{r}"] for r in rs])
        out[f"all_req_{side}_{part}"] = ", ".join(str(out[f"req_{side}_{part}_{r}"]) for r in rs)
        out[f"all_secs_{side}_{part}"] = ", ".join(f'{out[f"secs_{side}_{part}_{r}"]:.1f}' for r in rs)
    # The breakdown of the last round, and the user agents seen.
    evs = [e for p in parts for e in hits[f"{side}_{p}_{rounds}"]]
    c = collections.Counter(kind(e) for e in evs)
    out[f"breakdown_{side}"] = ", ".join(f"{k} {v}" for k, v in sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))
    out[f"agents_{side}"] = ", ".join(sorted({e["userAgent"] for l, h in hits.items() if l.startswith(side) for e in h}))
e2e = [out[f"secs_kubectl_apply_{r}"] + out[f"secs_kubectl_status_{r}"] for r in rs]
e2e_req = [out[f"req_kubectl_apply_{r}"] + out[f"req_kubectl_status_{r}"] for r in rs]
out["med_secs_kubectl_e2e"], out["med_req_kubectl_e2e"] = med(e2e), med(e2e_req)
ours_s, ours_r = out["med_secs_packfy_deploy"], out["med_req_packfy_deploy"]
out["ratio_secs_status"] = ours_s / out["med_secs_kubectl_status"]
out["ratio_secs_e2e"] = ours_s / out["med_secs_kubectl_e2e"]
out["ratio_req_status"] = ours_r / max(out["med_req_kubectl_status"], 1)
out["ratio_req_e2e"] = ours_r / max(out["med_req_kubectl_e2e"], 1)
for k, v in out.items():
    if isinstance(v, float):
        v = f"{v:.2f}" if k.startswith("ratio") else (f"{v:.1f}" if "secs" in k else f"{v:g}")
    print(f"{k}={shlex.quote(str(v))}")
PY
)"
((req_packfy_deploy_1 > 0)) || k8s_fail "no requests of packfy-deploy found in the audit log ($audit_keep)"

write_section k8s "$(cat <<MD
## k8s

A rollout of $replicas replicas (\`sample:vN\` → \`sample:vN+1\`, maxSurge $surge (25%), maxUnavailable 0)
on $nodes kwok nodes: \`packfy-deploy deploy --no-build\` (server-side apply, Lease lock, release
record, watch-based wait) against \`kubectl apply\` + \`kubectl rollout status --timeout=10m\` of a
Deployment of the same shape, each in its own namespace of one cluster (Kubernetes $K8S_VERSION,
kwok $KWOK_VERSION, binary runtime, default QPS limits; kwok marks pods Ready at once, so the
time is the controller's: creating $replicas pods and deleting $replicas). Requests: audit events
of stage RequestReceived (policy level Metadata; a watch counts once) with the tool's
userAgent in the process's time window. Medians of $rounds rounds, who goes first alternating.
Produced by \`make bench-k8s\` (bench/k8s.sh), $(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD),
release build, $(nproc) cores, load average $load.

| v(N) → v(N+1), $replicas replicas | wall time (s) | API requests | per round (requests) |
|---|---|---|---|
| \`kubectl apply\` | $med_secs_kubectl_apply | $med_req_kubectl_apply | $all_req_kubectl_apply |
| \`kubectl rollout status\` | $med_secs_kubectl_status | $med_req_kubectl_status | $all_req_kubectl_status |
| kubectl, apply + rollout status | $med_secs_kubectl_e2e | $med_req_kubectl_e2e | |
| **packfy-deploy deploy** | **$med_secs_packfy_deploy** | **$med_req_packfy_deploy** | $all_req_packfy_deploy |
| **ratio ours / kubectl rollout status** | **$ratio_secs_status** | **$ratio_req_status** | |
| **ratio ours / kubectl apply + rollout status** | **$ratio_secs_e2e** | **$ratio_req_e2e** | |

Wall times per round (s): packfy-deploy $all_secs_packfy_deploy; rollout status $all_secs_kubectl_status.
First rollout (0 → $replicas, creating the Deployment): packfy-deploy $secs_packfy_deploy_0 s, $req_packfy_deploy_0 requests;
kubectl apply + rollout status $secs_kubectl_apply_0 + $secs_kubectl_status_0 s, $req_kubectl_apply_0 + $req_kubectl_status_0 requests.

Requests of the last round by verb and resource:
- packfy-deploy: $breakdown_packfy
- kubectl (apply + rollout status): $breakdown_kubectl

User agents seen: $agents_packfy; $agents_kubectl.
MD
)"
echo "bench/RESULTS.md: k8s section written (packfy-deploy $med_secs_packfy_deploy s / $med_req_packfy_deploy requests, kubectl rollout status $med_secs_kubectl_status s / $med_req_kubectl_status requests)"
