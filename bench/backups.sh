#!/usr/bin/env bash
# `make bench-backups`: a deploy whose backup job pg_dumps a ~200 MB table of the test
# environment's PostgreSQL, against the same deploy with a tiny table; the figure is the peak
# RSS of the packfy-deploy process alone (VmHWM, sampled from /proc every 20 ms), which a
# streamed dump keeps flat. Writes bench/RESULTS.md section "backups".
# PACKFY_BIG_DUMP_ROWS (default 1400000, ~146 bytes each) sets the size.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck disable=SC1091
source bench/lib.sh
bench_env
rows="${PACKFY_BIG_DUMP_ROWS:-1400000}"
work="$(mktemp -d)"
tag="bkbench-$$"
names=(bkbsmall bkbbig)
tables=("bench_backup_small_$$" "bench_backup_big_$$")
cleanup() {
  for n in "${names[@]}"; do remove_region "$n"; done
  for t in "${tables[@]}"; do psql --dbname "$PACKFY_PG_URL" -qc "DROP TABLE IF EXISTS $t" 2>/dev/null || true; done
  docker rmi "packfy-sample:$tag" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
tests/env/build-sample.sh "$tag" >/dev/null 2>&1
mkdir -p "$work/regions"
for i in 0 1; do
  n="${names[$i]}" t="${tables[$i]}"
  count=$((i == 0 ? 10 : rows))
  psql --dbname "$PACKFY_PG_URL" -v ON_ERROR_STOP=1 -qc "
    CREATE TABLE $t (id bigint PRIMARY KEY, a text, n bigint, b text);
    INSERT INTO $t SELECT g, md5('a' || g) || md5('b' || g), g, md5('c' || g) || md5('d' || g)
      FROM generate_series(1, $count) AS g;"
  cat >"$work/regions/$n.yaml" <<YAML
currency: USD
target: {docker: {host: "$DOCKER_HOST"}}
traffic: none
services:
  web:
    image: packfy-sample
    ports: [{container: 8080}]
    health: {http: {path: /health}, interval: 500ms, timeout: 500ms, healthy_threshold: 2, deadline: 30s}
    rollout: {bake: 1s}
backups:
  - name: db
    command: [pg_dump, --dbname, "\${PGURL}", --table, $t]
    env: {PGURL: {secret: "env:PACKFY_PG_URL"}}
    store: $work/store
YAML
done

# measure REGION → "peak_kb seconds"
measure() {
  local start end pid peak=0 kb
  start=$(date +%s.%N)
  "$bin" --regions-dir "$work/regions" -q deploy --region "$1" --version "$tag" &
  pid=$!
  while kb=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null) && [[ -n "$kb" ]]; do
    ((kb > peak)) && peak=$kb
    sleep 0.02
  done
  wait "$pid"
  end=$(date +%s.%N)
  echo "$peak $(echo "$end - $start" | bc)"
}
read -r small_kb small_s < <(measure bkbsmall)
read -r big_kb big_s < <(measure bkbbig)
json="$("$bin" --regions-dir "$work/regions" -o json backup list --region bkbbig)"
read -r dump stored < <(python3 -c 'import json,sys; r=json.loads(sys.argv[1])[0]; print(r["bytes"], r["stored_bytes"])' "$json")
"$bin" --regions-dir "$work/regions" -q backup verify "bkbbig/production/r1/db"
mb() { python3 -c "print(f'{$1/1e6:.1f}')"; }
mib() { python3 -c "print(f'{$1/1024:.1f}')"; }
secs() { python3 -c "print(f'{$1:.1f}')"; }

write_section backups "$(cat <<MD
## backups

A deploy whose backup job is \`pg_dump --dbname \${PGURL} --table T\` (PostgreSQL 15 of the test
environment, on loopback): T holds $rows rows of mostly md5 hex of distinct inputs, so zstd can
only about halve the dump. The dump streams through the hashing, counting writer and a bounded
channel into zstd (level 3) on a blocking thread. Peak RSS is the \`packfy-deploy\` process
alone (VmHWM from /proc/PID/status, sampled every 20 ms; pg_dump is another process).
Produced by \`make bench-backups\` (bench/backups.sh), $(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD),
release build, $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load average $(cut -d' ' -f1-3 /proc/loadavg).

| deploy (creates 1 container) with a backup of | dump | stored (zstd) | wall time | peak RSS of packfy-deploy |
|---|---|---|---|---|
| a 10-row table (baseline) | ~0 MB | ~0 MB | $(secs "$small_s") s | $(mib "$small_kb") MiB |
| the $rows-row table | $(mb "$dump") MB | $(mb "$stored") MB | $(secs "$big_s") s | $(mib "$big_kb") MiB |

The dump costs $(python3 -c "print(f'{($big_kb-$small_kb)/1024:.1f}')") MiB of memory, not its size: zstd's context, a 256 KiB file buffer and at most
32 chunks in flight. \`tests/backups.rs\` (a_200_mb_dump_streams_with_bounded_memory) asserts the
same deploy stays under 64 MiB, so a change that buffers the dump fails the tests.
MD
)"
echo "bench/RESULTS.md: backups section written (peak $(mib "$big_kb") MiB for a $(mb "$dump") MB dump)"
