#!/usr/bin/env bash
# `make bench-fleet`: five regions — three on the test environment's Docker daemons, two on its
# Kubernetes control plane — deployed in one wave against the same five one after another; the
# parallel wall time should approach the slowest single region's. Writes bench/RESULTS.md
# section "fleet".
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck disable=SC1091
source bench/lib.sh
bench_env
read -r -a hosts <<<"$PACKFY_DOCKER_HOSTS"
work="$(mktemp -d)"
names=(bfa bfb bfc bfd bfe)
kube_names=(bfd bfe)
[[ -s "${KUBECONFIG:-}" ]] || { echo "bench-fleet: no test cluster (KUBECONFIG in target/test-env/env.sh); run make env-up" >&2; exit 1; }
context="$("$PACKFY_KUBECTL" config current-context)"
cleanup() {
  for n in "${kube_names[@]}"; do "$PACKFY_KUBECTL" delete namespace "bench-fleet-$n" --wait=false >/dev/null 2>&1 || true; done
  for i in 0 1 2; do remove_region "${names[$i]}" "${hosts[$((i % ${#hosts[@]}))]}"; done
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/one" "$work/seq"
tag="fleet-$$"
for h in "${hosts[@]}"; do
  for v in a b c d; do DOCKER_HOST="$h" tests/env/build-sample.sh "$tag-$v" >/dev/null 2>&1; done
done
for i in "${!names[@]}"; do
  h="${hosts[$((i % ${#hosts[@]}))]}"
  for d in one seq; do
    if ((i >= 3)); then
      cat >"$work/$d/${names[$i]}.yaml" <<YAML
currency: USD
target: {kubernetes: {context: $context, namespace: bench-fleet-${names[$i]}}}
services:
  web:
    image: sample
    replicas: 2
    ports: [{container: 8080}]
    rollout: {bake: 0s, progress_deadline: 60s}
YAML
      continue
    fi
    cat >"$work/$d/${names[$i]}.yaml" <<YAML
currency: USD
target: {docker: {host: "$h"}}
traffic: none
services:
  web:
    image: packfy-sample
    replicas: 2
    ports: [{container: 8080}]
    health: {http: {path: /health}, interval: 500ms, timeout: 500ms, healthy_threshold: 2, deadline: 30s}
    rollout: {bake: 2s}
    stop_grace_period: 2s
YAML
  done
done
echo "waves: [[${names[*]}]]" | sed 's/ /, /g; s/waves:,/waves:/' >"$work/one/_defaults.yaml"
echo "max_parallel: 5" >>"$work/one/_defaults.yaml"
now() { date +%s.%N; }
run() { "$bin" --regions-dir "$1" -q deploy --region all --version "$2" >/dev/null 2>&1; }

# Warm up (first deploys create containers from nothing), then time v-b and v-c.
run "$work/one" "$tag-a"
t0=$(now); run "$work/one" "$tag-b"; t1=$(now)
parallel=$(echo "$t1 - $t0" | bc -l)
# One region alone, each, for the slowest single region.
slowest=0
for n in "${names[@]}"; do
  t0=$(now); "$bin" --regions-dir "$work/one" -q deploy --region "$n" --version "$tag-c" >/dev/null 2>&1; t1=$(now)
  d=$(echo "$t1 - $t0" | bc -l)
  slowest=$(echo "if ($d > $slowest) $d else $slowest" | bc -l)
done
# The same five one after another (no waves: one region at a time).
t0=$(now); run "$work/seq" "$tag-d"; t1=$(now)
sequential=$(echo "$t1 - $t0" | bc -l)

section=$(cat <<MD
## fleet

Command: \`make bench-fleet\` (bench/fleet.sh) on $(date -u +%Y-%m-%d), $(nproc) cores, five regions: three over ${#hosts[@]} Docker daemons (2 replicas each, rolling replace with a 2 s bake) and two on the kwok Kubernetes control plane (2 replicas each, server-side apply + watched rollout).

| figure | value |
|---|---|
| five regions in one wave (max_parallel 5), wall time | $(printf '%.2f' "$parallel") s |
| the slowest single region alone | $(printf '%.2f' "$slowest") s |
| the same five one after another | $(printf '%.2f' "$sequential") s |
| **parallel / slowest single** | **$(printf '%.2f' "$(echo "$parallel / $slowest" | bc -l)")** |
| **sequential / parallel** | **$(printf '%.2f' "$(echo "$sequential / $parallel" | bc -l)")** |
MD
)
write_section fleet "$section"
echo "$section"
