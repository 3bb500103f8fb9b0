#!/usr/bin/env bash
# bench/ab.sh: two builds side by side (BASE=other/packfy-deploy bench/ab.sh): rolling replace of 3 replicas through HAProxy, no load, N rounds per binary, alternating.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."; source target/test-env/env.sh
read -r -a backends <<<"$PACKFY_HAPROXY_BACKENDS"; read -r -a frontends <<<"$PACKFY_HAPROXY_FRONTENDS"
N=${N:-5}
for v in tm-t1 tm-t2; do tests/env/build-sample.sh "$v" >/dev/null 2>&1; done
mk() { # name backend frontend
  local w; w=$(mktemp -d); mkdir -p $w/regions
  cat >$w/regions/$1.yaml <<YAML
currency: USD
target: {docker: {host: "$DOCKER_HOST"}}
traffic:
  haproxy:
    runtime_api: $PACKFY_HAPROXY_SOCKET
    frontend: http://$3
    backends: {web: $2}
services:
  web:
    image: packfy-sample
    replicas: 3
    ports: [{container: 8080}]
    health: {http: {path: /health}, interval: 500ms, timeout: 500ms, healthy_threshold: 2, deadline: 30s}
    rollout: {max_surge: 1, bake: 0s, drain_timeout: 5s}
    stop_grace_period: 5s
YAML
  echo $w
}
wa=$(mk abbase "${backends[1]}" "${frontends[1]}"); wb=$(mk abnew "${backends[2]}" "${frontends[2]}")
A=${BASE:?BASE=path of the other build}; B=${NEW:-$PWD/target/release/packfy-deploy}
$A --regions-dir $wa/regions -q deploy --region abbase --version tm-t1 || exit 1
$B --regions-dir $wb/regions -q deploy --region abnew --version tm-t1 || exit 1
ta=(); tb=()
for i in $(seq 1 $N); do
  v=$([ $((i % 2)) = 1 ] && echo tm-t2 || echo tm-t1)
  s=$(date +%s.%N); $A --regions-dir $wa/regions -q deploy --region abbase --version $v || echo fail-a; e=$(date +%s.%N); ta+=($(echo "$e - $s" | bc))
  s=$(date +%s.%N); $B --regions-dir $wb/regions -q deploy --region abnew --version $v || echo fail-b; e=$(date +%s.%N); tb+=($(echo "$e - $s" | bc))
done
echo "base: ${ta[*]}"; echo "new:  ${tb[*]}"
python3 -c "
import statistics as s,sys
a=[float(x) for x in '${ta[*]}'.split()]; b=[float(x) for x in '${tb[*]}'.split()]
print(f'base median {s.median(a):.2f}s (min {min(a):.2f}, max {max(a):.2f}); new median {s.median(b):.2f}s (min {min(b):.2f}, max {max(b):.2f}); new/base {s.median(b)/s.median(a):.2f}')
"
for r in abbase abnew; do docker ps -aq --filter label=packfy.region=$r | xargs -r docker rm -f >/dev/null; docker volume ls -q --filter label=packfy.region=$r | xargs -r docker volume rm -f >/dev/null; done
for be in "${backends[1]}" "${backends[2]}"; do
  for s in $(echo "show servers state $be" | socat - UNIX-CONNECT:$PACKFY_HAPROXY_SOCKET | awk 'NR>2{print $4}' | grep -E "^ab(base|new)-"); do
    echo "set server $be/$s state maint" | socat - UNIX-CONNECT:$PACKFY_HAPROXY_SOCKET >/dev/null
    echo "del server $be/$s" | socat - UNIX-CONNECT:$PACKFY_HAPROXY_SOCKET >/dev/null
  done
done
