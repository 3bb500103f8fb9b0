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
