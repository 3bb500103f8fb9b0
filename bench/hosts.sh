#!/usr/bin/env bash
# `make bench-hosts`: what reaching a Docker host over ssh costs. The same rolling deploy
# (3 replicas, max_surge 1, no bake, health GET /health every 500 ms, 2 passes) RUNS times
# (default 5) on this machine's engine through the loopback HAProxy, and on test host h1
# (tests/env/hosts.sh) over ssh:// through the lb namespace's HAProxy, its Runtime API over
# ssh too; and on hosts h1, h2, h3 as one region (one replica each, hosts_at_once 1, the image
# pulled from the test registry), the same with hosts_at_once 3 (the hosts roll side by
# side), and that region behind two load balancers (the lb and lb2
# namespaces, `runtime_api: [lb, lb2]`); the median and spread of each, their ratios, and
# each deploy's overhead over its inherent time (3 batches × one container's start to healthy,
# measured where it runs, as bench/deploy.sh does) go to bench/RESULTS.md ("hosts").
# BIN picks the binary (default: the release build, which must exist).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck disable=SC1091
source bench/lib.sh
# shellcheck disable=SC1091
source target/test-env/env.sh
bin="${BIN:-$root/target/release/packfy-deploy}"
[[ -x "$bin" ]] || { echo "no $bin: cargo build --release, or BIN=…" >&2; exit 2; }
[[ -n "${PACKFY_SSH_CONFIG:-}" ]] || { echo "the test hosts are not up (tests/env/up.sh, part hosts)" >&2; exit 2; }
runs="${RUNS:-5}"
read -r -a backends <<<"$PACKFY_HAPROXY_BACKENDS"
read -r -a frontends <<<"$PACKFY_HAPROXY_FRONTENDS"
read -r -a lb_backends <<<"$PACKFY_HOSTS_LB_BACKENDS"
read -r -a lb_frontends <<<"$PACKFY_HOSTS_LB_FRONTENDS"
read -r -a sockets <<<"$PACKFY_HOSTS_DOCKER_SOCKETS"
work="$(mktemp -d)"
# clear_lane SOCKET BACKEND: deletes the backend's servers (a previous run's, or this one's).
clear_lane() {
  local s
  for s in $(socat - "UNIX-CONNECT:$1" <<<"show servers state $2" | awk 'NR > 2 {print $4}'); do
    socat - "UNIX-CONNECT:$1" <<<"set server $2/$s state maint; shutdown sessions server $2/$s; del server $2/$s" >/dev/null
  done
}
cleanup() {
  remove_region benchlocal
  remove_region benchssh "${sockets[0]}"
  for s in "${sockets[@]}"; do remove_region benchssh3 "$s"; remove_region benchat3 "$s"; done
  clear_lane "$PACKFY_HAPROXY_SOCKET" "${backends[1]}"
  for s in "${sockets[@]}"; do remove_region benchlbs "$s"; done
  clear_lane "$PACKFY_HOSTS_LB_SOCKET" "${lb_backends[-1]}"
  clear_lane "$PACKFY_HOSTS_LB2_SOCKET" "${lb_backends[-1]}"
}
trap 'cleanup; rm -rf "$work"' EXIT
mkdir -p "$work/regions"
tag="bench-$$"
for v in v1 v2; do
  tests/env/build-sample.sh "$tag-$v" >/dev/null 2>&1
  DOCKER_HOST="${sockets[0]}" tests/env/build-sample.sh "$tag-$v" >/dev/null 2>&1
  docker -H "${sockets[0]}" tag "packfy-sample:$tag-$v" "$PACKFY_REGISTRY/packfy-sample-bench:$tag-$v"
  docker -H "${sockets[0]}" push "$PACKFY_REGISTRY/packfy-sample-bench:$tag-$v" >/dev/null
done

region() { # region NAME HOST RUNTIME_API FRONTEND BACKEND [IMAGE HOSTS [HOSTS_AT_ONCE]] (RUNTIME_API: YAML)
  cat <<YAML
currency: USD
target: {docker: {${7:-host: "$2"}}}
traffic:
  haproxy: {runtime_api: $3, frontend: "http://$4", backends: {web: $5}}
services:
  web:
    image: ${6:-packfy-sample}
    replicas: 3
    ports: [{container: 8080}]
    health: {http: {path: /health}, interval: 500ms, timeout: 400ms, healthy_threshold: 2, deadline: 30s}
    rollout: {max_surge: 1, bake: 0s, drain_timeout: 5s, hosts_at_once: ${8:-1}}
    stop_grace_period: 5s
YAML
}
lb="\"ssh://root@$PACKFY_HOSTS_LB$PACKFY_HOSTS_LB_SOCKET\""
lb2="\"ssh://root@$PACKFY_HOSTS_LB2$PACKFY_HOSTS_LB2_SOCKET\""
region benchlocal "$DOCKER_HOST" "\"$PACKFY_HAPROXY_SOCKET\"" "${frontends[1]}" "${backends[1]}" >"$work/regions/benchlocal.yaml"
region benchssh "ssh://root@${PACKFY_HOSTS%% *}" "$lb" \
  "${lb_frontends[-1]}" "${lb_backends[-1]}" >"$work/regions/benchssh.yaml"
read -r -a names <<<"$PACKFY_HOSTS"
three="hosts: [ssh://root@${names[0]}, ssh://root@${names[1]}, ssh://root@${names[2]}]"
region benchssh3 "" "$lb" "${lb_frontends[-1]}" "${lb_backends[-1]}" \
  "$PACKFY_REGISTRY/packfy-sample-bench" "$three" >"$work/regions/benchssh3.yaml"
region benchat3 "" "$lb" "${lb_frontends[-1]}" "${lb_backends[-1]}" \
  "$PACKFY_REGISTRY/packfy-sample-bench" "$three" 3 >"$work/regions/benchat3.yaml"
region benchlbs "" "[$lb, $lb2]" "${lb_frontends[-1]}" "${lb_backends[-1]}" \
  "$PACKFY_REGISTRY/packfy-sample-bench" "$three" >"$work/regions/benchlbs.yaml"
cleanup

now() { date +%s.%N; }
times() { # times REGION: RUNS timed deploys, v2 and v1 in turn, after an untimed v1
  local t0 t1 i
  "$bin" --regions-dir "$work/regions" -q deploy --region "$1" --version "$tag-v1" >&2
  for ((i = 1; i <= runs; i++)); do
    t0=$(now)
    "$bin" --regions-dir "$work/regions" -q deploy --region "$1" --version "$tag-v$((i % 2 + 1))" >&2
    t1=$(now)
    echo "$t1 - $t0" | bc -l
  done
}
stats() { python3 -c '
import statistics, sys
xs = sorted(float(x) for x in sys.argv[1:])
print(f"{statistics.median(xs):.2f} {xs[0]:.2f} {xs[-1]:.2f}")' "$@"; }
# The inherent time (bench/lib.sh): 3 batches of one container's start to healthy, asked on
# h1 from inside its network namespace (the runner cannot reach a host's containers).
inherent() { echo "3 * $(inherent_one "packfy-sample:$tag-v2" "$@")" | bc -l; }
read -r -a veths <<<"$PACKFY_HOSTS_VETHS"
h1_ns="packfy-${veths[0]:2:4}-${veths[0]:6}"
read -r ilmed _ _ <<<"$(stats $(for ((i = 0; i < runs; i++)); do inherent "$DOCKER_HOST"; done))"
read -r ismed _ _ <<<"$(stats $(for ((i = 0; i < runs; i++)); do inherent "${sockets[0]}" "$h1_ns"; done))"
read -r lmed lmin lmax <<<"$(stats $(times benchlocal))"
read -r smed smin smax <<<"$(stats $(times benchssh))"
clear_lane "$PACKFY_HOSTS_LB_SOCKET" "${lb_backends[-1]}"
read -r tmed tmin tmax <<<"$(stats $(times benchssh3))"
for s in "${sockets[@]}"; do remove_region benchssh3 "$s"; done
clear_lane "$PACKFY_HOSTS_LB_SOCKET" "${lb_backends[-1]}"
read -r amed amin amax <<<"$(stats $(times benchat3))"
for s in "${sockets[@]}"; do remove_region benchat3 "$s"; done
clear_lane "$PACKFY_HOSTS_LB_SOCKET" "${lb_backends[-1]}"
read -r bmed bmin bmax <<<"$(stats $(times benchlbs))"
ratio=$(printf '%.2f' "$(echo "$smed / $lmed" | bc -l)")
ratio3=$(printf '%.2f' "$(echo "$tmed / $smed" | bc -l)")
ratiolbs=$(printf '%.2f' "$(echo "$bmed / $tmed" | bc -l)")
ilmed=$(printf '%.2f' "$ilmed")
ismed=$(printf '%.2f' "$ismed")
overl=$(printf '%.2f' "$(echo "$lmed / $ilmed" | bc -l)")
overs=$(printf '%.2f' "$(echo "$smed / $ismed" | bc -l)")
overt=$(printf '%.2f' "$(echo "$tmed / $ismed" | bc -l)")
ratioat=$(printf '%.2f' "$(echo "$amed / $tmed" | bc -l)")
overa=$(printf '%.2f' "$(echo "$amed * 3 / $ismed" | bc -l)")

section=$(cat <<MD
## hosts

Command: \`make bench-hosts\` (bench/hosts.sh) on $(date -u +%Y-%m-%d), $(nproc) cores shared with
other work, binary \`${bin#"$root"/}\`. One rolling deploy of 3 replicas (max_surge 1, no bake,
GET /health every 500 ms, 2 passes), $runs runs each, v1 and v2 in turn:

| where | median | min – max |
|---|---|---|
| this machine's engine (unix socket), loopback HAProxy | $lmed s | $lmin – $lmax s |
| test host h1 over ssh://, HAProxy in the lb namespace over ssh | $smed s | $smin – $smax s |
| ratio ssh / local | ×$ratio | |
| hosts h1, h2, h3 as one region over ssh:// (one replica each, hosts_at_once 1) | $tmed s | $tmin – $tmax s |
| ratio 3 hosts / 1 host, both over ssh | ×$ratio3 | |
| the 3 hosts, hosts_at_once 3 (all three roll side by side) | $amed s | $amin – $amax s |
| ratio hosts_at_once 3 / 1 | ×$ratioat | |
| the 3 hosts behind two load balancers (lb and lb2 over ssh, every change to both) | $bmed s | $bmin – $bmax s |
| ratio two load balancers / one | ×$ratiolbs | |
| inherent time, this machine (3 × docker run → 2 passes of GET /health) | $ilmed s | median of $runs |
| inherent time, h1 (the same, asked inside h1's namespace) | $ismed s | median of $runs |
| **overhead over the inherent time**, this machine | **×$overl** | |
| **overhead over the inherent time**, h1 over ssh | **×$overs** | |
| **overhead over the inherent time**, 3 hosts over ssh (h1's inherent time) | **×$overt** | |
| **overhead over the inherent time**, 3 hosts at once (one batch: a third of h1's) | **×$overa** | |

Over ssh the CLI logs in once per host (ssh's ControlMaster), to every host and load balancer
at once; the engine's socket and HAProxy's Runtime API socket are forwarded through that login
(\`ssh -O forward -L\`), so a connection is a channel of it. HAProxy's own checks, not the CLI's,
judge the new containers there (checked every 20 ms until their first pass, then every
interval). The load average of this machine while it ran: $(cut -d' ' -f1-3 /proc/loadavg).
MD
)
write_section hosts "$section"
echo "$section"
