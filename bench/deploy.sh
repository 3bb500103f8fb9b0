#!/usr/bin/env bash
# `make bench-deploy`: the Docker target's figures, measured against the real test environment
# and written to bench/RESULTS.md (section "docker"):
#   1. a rolling deploy of 3 replicas against its inherent time (3 batches × one container's
#      start-to-healthy time, measured the same way the health check does);
#   2. failed requests during a deploy through HAProxy, packfy-deploy against
#      `docker-compose up -d` recreating the same service, in the same run, same load;
#   3. the time from `rollback` to the previous release serving every request.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck disable=SC1091
source bench/lib.sh
bench_env
command -v docker-compose >/dev/null || { apt-get update -qq && apt-get install -y -qq docker-compose >/dev/null; }
read -r -a backends <<<"$PACKFY_HAPROXY_BACKENDS"
read -r -a frontends <<<"$PACKFY_HAPROXY_FRONTENDS"
be="${backends[1]}" fe="${frontends[1]}"        # packfy-deploy's lane
cbe="${backends[2]}" cfe="${frontends[2]}"      # docker-compose's lane
work="$(mktemp -d)"
trap 'docker-compose -p packfybench -f "$work/compose.yml" down -t 1 >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
mkdir -p "$work/regions"

tag="bench-$$"
for v in v1 v2; do tests/env/build-sample.sh "$tag-$v" >/dev/null 2>&1; done

cat >"$work/regions/bench.yaml" <<YAML
currency: USD
target: {docker: {host: "$DOCKER_HOST"}}
traffic:
  haproxy:
    runtime_api: $PACKFY_HAPROXY_SOCKET
    frontend: http://$fe
    backends: {web: $be}
services:
  web:
    image: packfy-sample
    replicas: 3
    ports: [{container: 8080}]
    health: {http: {path: /health}, interval: 500ms, timeout: 500ms, healthy_threshold: 2, deadline: 30s}
    rollout: {max_surge: 1, bake: 0s, drain_timeout: 5s}
    stop_grace_period: 5s
YAML
pd() { "$bin" --regions-dir "$work/regions" -q "$@"; }
now() { date +%s.%N; }

# Clean slate for the bench region.
remove_region bench

# 1. Inherent time of one container: docker run → /health answers 200 twice, 500 ms apart.
one=$(inherent_one "packfy-sample:$tag-v2")
inherent=$(echo "3 * $one" | bc -l)

pd deploy --region bench --version "$tag-v1"
# 2a. packfy-deploy v1 → v2 under load.
rm -f "$work/stop"
LOAD_STOP="$work/stop" bench/load.py "$fe" 120 4 >"$work/load-packfy.json" &
loadpid=$!
sleep 1
t0=$(now)
pd deploy --region bench --version "$tag-v2"
t1=$(now)
sleep 1
touch "$work/stop"
wait "$loadpid"
deploy_secs=$(echo "$t1 - $t0" | bc -l)

# 3. rollback → every request answered by v1 again.
t0=$(now)
pd rollback --region bench
t_cmd=$(now)
while :; do
  all=1
  for _ in $(seq 20); do
    [[ "$(curl -fsS "http://$fe/version" 2>/dev/null)" == "$tag-v1" ]] || { all=0; break; }
  done
  ((all)) && break
done
t1=$(now)
rollback_cmd=$(echo "$t_cmd - $t0" | bc -l)
rollback_serving=$(echo "$t1 - $t0" | bc -l)

# 2b. docker-compose up -d recreating the same service behind HAProxy, same load.
cat >"$work/compose.yml" <<YAML
services:
  web:
    image: packfy-sample:\${TAG}
    ports: ["127.0.0.1:18990:8080"]
    stop_grace_period: 5s
YAML
TAG="$tag-v1" docker-compose -p packfybench -f "$work/compose.yml" up -d >/dev/null 2>&1
sleep 1
socat - "UNIX-CONNECT:$PACKFY_HAPROXY_SOCKET" <<<"add server $cbe/compose 127.0.0.1:18990 check" >/dev/null
socat - "UNIX-CONNECT:$PACKFY_HAPROXY_SOCKET" <<<"enable health $cbe/compose" >/dev/null
socat - "UNIX-CONNECT:$PACKFY_HAPROXY_SOCKET" <<<"set server $cbe/compose state ready" >/dev/null
sleep 2
rm -f "$work/stop"
LOAD_STOP="$work/stop" bench/load.py "$cfe" 120 4 >"$work/load-compose.json" &
loadpid=$!
sleep 1
t0=$(now)
TAG="$tag-v2" docker-compose -p packfybench -f "$work/compose.yml" up -d >/dev/null 2>&1
t1=$(now)
# Until it serves v2 again (compose returns before the app is up).
until [[ "$(curl -fsS "http://$cfe/version" 2>/dev/null)" == "$tag-v2" ]]; do sleep 0.05; done
sleep 1
touch "$work/stop"
wait "$loadpid"
compose_secs=$(echo "$t1 - $t0" | bc -l)
socat - "UNIX-CONNECT:$PACKFY_HAPROXY_SOCKET" <<<"set server $cbe/compose state maint" >/dev/null
socat - "UNIX-CONNECT:$PACKFY_HAPROXY_SOCKET" <<<"del server $cbe/compose" >/dev/null

pf=$(cat "$work/load-packfy.json")
cf=$(cat "$work/load-compose.json")
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }
ratio=$(echo "$deploy_secs / $inherent" | bc -l)

section=$(cat <<MD
## docker

Command: \`make bench-deploy\` (bench/deploy.sh) on $(date -u +%Y-%m-%d), $(nproc) cores, Docker $(docker version --format '{{.Server.Version}}'), HAProxy $(haproxy -v | head -1 | awk '{print $3}').
Sample app FROM scratch; health: GET /health every 500 ms, 2 passes to be healthy; max_surge 1; no bake.

| figure | value |
|---|---|
| one container, docker run → healthy (2 passes) | $(printf '%.2f' "$one") s |
| inherent time of 3 replicas in 3 batches | $(printf '%.2f' "$inherent") s |
| packfy-deploy v1 → v2, 3 replicas, wall time | $(printf '%.2f' "$deploy_secs") s |
| **overhead ratio** (wall / inherent) | **$(printf '%.2f' "$ratio")** |
| requests during packfy-deploy v1 → v2 (4 keep-alive clients) | $(field "$pf" ok) ok, **$(field "$pf" failed) failed**, $(field "$pf" rps) req/s |
| requests during \`docker-compose up -d\` v1 → v2 (same load, same HAProxy) | $(field "$cf" ok) ok, **$(field "$cf" failed) failed**, $(field "$cf" rps) req/s |
| docker-compose up -d wall time | $(printf '%.2f' "$compose_secs") s |
| \`rollback\` command wall time | $(printf '%.2f' "$rollback_cmd") s |
| rollback → every request served by v1 | $(printf '%.2f' "$rollback_serving") s |

First compose errors: $(field "$cf" errors)
MD
)
write_section docker "$section"
echo "$section"
remove_region bench
docker rmi -f "packfy-sample:$tag-v1" "packfy-sample:$tag-v2" >/dev/null 2>&1 || true
