#!/usr/bin/env bash
# build-sample.sh VERSION [KEY=VALUE | docker-build-option ...]
#
# Builds the sample app's static binary (a no-op when it is up to date) and the image
# packfy-sample:VERSION (or ${PACKFY_SAMPLE_REPO:-packfy-sample}:VERSION) on the engine
# DOCKER_HOST names, with APP_VERSION=VERSION. KEY=VALUE arguments become build args
# (NEVER_HEALTHY=1, HEALTHY_AFTER_SECS=5, EXIT_AFTER_SECS=3, ERROR_RATE=0.2, PORT=9000,
# PRINT_ENV=1, PACKFY_REGION=cuba, …); arguments starting with `-` go to `docker build` as they are.
# Prints the image reference as its last line of standard output.
#
#   DOCKER_HOST=unix:///…/docker-pf2.sock tests/env/build-sample.sh v2 ERROR_RATE=0.2
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if (($# < 1)) || [[ "$1" == -* ]]; then
  sed -n '2,12s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
  exit 2
fi
version="$1"
shift
image="${PACKFY_SAMPLE_REPO:-packfy-sample}:$version"

build_args=(--build-arg "APP_VERSION=$version")
for a in "$@"; do
  case "$a" in
    -*) build_args+=("$a") ;;
    *=*) build_args+=(--build-arg "$a") ;;
    *)
      echo "build-sample.sh: expected KEY=VALUE or a docker build option, got '$a'" >&2
      exit 2
      ;;
  esac
done

"$ROOT/tests/env/sample-bin.sh" >&2

context="$(mktemp -d "${TMPDIR:-/tmp}/packfy-sample-ctx.XXXXXX")"
trap 'rm -rf "$context"' EXIT
cp "$SAMPLE_BIN" "$context/packfy-sample"
cp "$SAMPLE_DIR/Dockerfile" "$context/Dockerfile"
# The classic builder: the engine is Debian's 20.10 and no buildx plugin is assumed.
DOCKER_BUILDKIT=0 docker build -q -t "$image" "${build_args[@]}" "$context" >&2
echo "$image"
