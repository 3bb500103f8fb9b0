# Shared by the bench scripts (bench_env and remove_region are below): write_section NAME TEXT
# replaces (or appends) the section `## NAME` of bench/RESULTS.md, so each benchmark rewrites
# only its own figures.
write_section() {
  python3 - "$1" "$2" <<'PY'
import re, sys, pathlib
name, sec = sys.argv[1], sys.argv[2].strip() + "\n"
p = pathlib.Path("bench/RESULTS.md")
text = p.read_text() if p.exists() else "# Benchmark results\n\nEach section is rewritten by the command it names.\n"
pattern = rf"^## {re.escape(name)}\n.*?(?=^## |\Z)"
if re.search(pattern, text, flags=re.M | re.S):
    text = re.sub(pattern, lambda _: sec + "\n", text, flags=re.M | re.S)
else:
    text = text.rstrip() + "\n\n" + sec
p.write_text(text)
PY
}

# bench_env: what the benchmarks on the test environment start with, run from the repository
# root ($root): target/test-env/env.sh sourced, and $bin the release build (built if missing).
bench_env() {
  # shellcheck disable=SC1091
  source target/test-env/env.sh
  bin="$root/target/release/packfy-deploy"
  [[ -x "$bin" ]] || cargo build --release --quiet
}

# remove_region NAME [HOST]: removes every container and volume of region NAME on the Docker
# engine HOST (default $DOCKER_HOST), whatever their state.
remove_region() {
  local host="${2:-$DOCKER_HOST}" filter="label=packfy.region=$1"
  DOCKER_HOST="$host" docker ps -aq --filter "$filter" | xargs -r env DOCKER_HOST="$host" docker rm -f >/dev/null
  DOCKER_HOST="$host" docker volume ls -q --filter "$filter" | xargs -r env DOCKER_HOST="$host" docker volume rm -f >/dev/null
}

# inherent_one IMAGE [DOCKER_HOST [NETNS]]: the inherent time of one container, in seconds:
# from `docker run` of IMAGE to its GET /health answering 200 twice, 500 ms apart (the health
# settings the benchmarks deploy with), asked where the container runs: its address on the
# engine's network, from inside NETNS when given (a test host's containers are reached only
# from its own namespace).
inherent_one() {
  local image="$1" dh="${2:-$DOCKER_HOST}" ns="${3:-}" id ip t0 t1 ok=0 run=()
  [[ -n "$ns" ]] && run=(nsenter "--net=/run/netns/$ns")
  t0=$(date +%s.%N)
  id=$(docker -H "$dh" run -d "$image")
  ip=$(docker -H "$dh" inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$id")
  while ((ok < 2)); do
    if "${run[@]}" curl -fsS -o /dev/null --max-time 1 "http://$ip:8080/health" 2>/dev/null; then ok=$((ok + 1)); else ok=0; fi
    ((ok < 2)) && sleep 0.5
  done
  t1=$(date +%s.%N)
  docker -H "$dh" rm -f "$id" >/dev/null
  echo "$t1 - $t0" | bc -l
}
