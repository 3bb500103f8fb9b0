#!/usr/bin/env bash
# `make bench-canary`: a bad release (30 % of its answers 5xx) against a canary and against a
# plain rolling deploy with bake, in one run, same load, same HAProxy (section "canary" of
# bench/RESULTS.md): how long the bad release answered requests (its first answer to its
# last, i.e. until all traffic was back on the old version) and the share of all requests it
# answered and failed.
#
# The CLI is the debug build unless PACKFY_BIN names another (the figures are waits: health
# checks, the bake, the analysis window; not the CLI's own speed).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck disable=SC1091
source target/test-env/env.sh
# shellcheck disable=SC1091
source bench/lib.sh
bin="${PACKFY_BIN:-$root/target/debug/packfy-deploy}"
[[ -x "$bin" ]] || cargo build --quiet
read -r -a backends <<<"$PACKFY_HAPROXY_BACKENDS"
read -r -a frontends <<<"$PACKFY_HAPROXY_FRONTENDS"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/regions"
tag="benchc-$$"
tests/env/build-sample.sh "$tag-good" >/dev/null 2>&1
tests/env/build-sample.sh "$tag-bad" ERROR_RATE=0.3 >/dev/null 2>&1

# region NAME BACKEND FRONTEND ROLLOUT
region() {
  cat >"$work/regions/$1.yaml" <<YAML
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
    rollout: $4
    stop_grace_period: 5s
YAML
}
region benchroll "${backends[1]}" "${frontends[1]}" \
  "{max_surge: 1, bake: 20s, max_5xx_ratio: 0.05, drain_timeout: 5s}"
region benchcanary "${backends[2]}" "${frontends[2]}" \
  "{strategy: canary, steps: [{weight: 10}, {analysis: {duration: 30s}}, {weight: 100}], analysis: {max_5xx_ratio: 0.05, min_requests: 20}, bake: 20s, drain_timeout: 5s}"
pd() { "$bin" --regions-dir "$work/regions" -q "$@"; }

# trace FRONTEND BAD_TAG: 4 keep-alive clients on `/` until $work/stop exists (at most 180 s);
# prints one JSON line with what the bad release answered.
trace() {
  python3 - "$1" "$2" "$work/stop" <<'PY'
import http.client, json, os, sys, threading, time
addr, bad, stop = sys.argv[1], sys.argv[2], sys.argv[3]
host, port = addr.rsplit(":", 1)
assert host in ("127.0.0.1", "localhost"), "load only goes to loopback"
lock = threading.Lock()
seen = {"total": 0, "bad": 0, "failed": 0, "first": None, "last": None}
t0 = time.time()
def worker():
    conn = None
    while time.time() - t0 < 180 and not os.path.exists(stop):
        try:
            if conn is None:
                conn = http.client.HTTPConnection(host, int(port), timeout=10)
            conn.request("GET", "/")
            r = conn.getresponse()
            body = r.read().decode(errors="replace")
            by_bad = r.status == 500 or f'"version":"{bad}"' in body
            failed = r.status != 200
        except Exception:
            conn, by_bad, failed = None, False, True
        now = time.time() - t0
        with lock:
            seen["total"] += 1
            seen["failed"] += failed
            if by_bad:
                seen["bad"] += 1
                seen["first"] = seen["first"] if seen["first"] is not None else now
                seen["last"] = now
        time.sleep(0.002)
ts = [threading.Thread(target=worker) for _ in range(4)]
[t.start() for t in ts]
[t.join() for t in ts]
print(json.dumps(seen))
PY
}

# run REGION FRONTEND: v1 (good) serves, then the bad release under load; prints
# "exit|wall|json".
run() {
  remove_region "$1"
  pd deploy --region "$1" --version "$tag-good" >/dev/null 2>&1
  rm -f "$work/stop"
  trace "$2" "$tag-bad" >"$work/$1.json" &
  local load=$! t0 t1 code=0
  sleep 1
  t0=$(date +%s.%N)
  pd deploy --region "$1" --version "$tag-bad" >/dev/null 2>&1 || code=$?
  t1=$(date +%s.%N)
  sleep 1
  touch "$work/stop"
  wait "$load"
  echo "$code|$(echo "$t1 - $t0" | bc -l)|$(cat "$work/$1.json")"
  remove_region "$1"
}
roll=$(run benchroll "${frontends[1]}")
canary=$(run benchcanary "${frontends[2]}")

row() {
  python3 - "$1" "$2" <<'PY'
import json, sys
name, line = sys.argv[1], sys.argv[2]
code, wall, j = line.split("|", 2)
s = json.loads(j)
span = (s["last"] - s["first"]) if s["first"] is not None else 0.0
print(f"| {name} | {code} | {float(wall):.1f} s | {span:.1f} s | {s['bad']} of {s['total']} ({100*s['bad']/max(1,s['total']):.2f} %) | {s['failed']} ({100*s['failed']/max(1,s['total']):.2f} %) |")
PY
}
section=$(cat <<MD
## canary

Command: \`make bench-canary\` (bench/canary.sh) on $(date -u +%Y-%m-%d), $(nproc) cores, the debug CLI, HAProxy
$(haproxy -v | head -1 | awk '{print $3}'). A release answering 30 % 5xx (the sample app's
ERROR_RATE) replaces a good one, 3 replicas, under 4 keep-alive clients on \`/\`. Rolling:
max_surge 1, bake 20s, max_5xx_ratio 0.05. Canary: weight 10, analysis 30s (max_5xx_ratio 0.05,
min_requests 20), weight 100. "Bad release answered" runs from its first answer to its last
(all traffic back on the old version).

| strategy | exit | deploy wall time | bad release answered for | requests it answered | requests failed |
|---|---|---|---|---|---|
$(row "rolling + bake" "$roll")
$(row "canary 10 % + analysis" "$canary")
MD
)
write_section canary "$section"
echo "$section"
DOCKER_HOST="$DOCKER_HOST" docker rmi -f "packfy-sample:$tag-good" "packfy-sample:$tag-bad" >/dev/null 2>&1 || true
