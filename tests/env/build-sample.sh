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
# --no-cache: every sample image shares its first ten steps (the ARGs), and the legacy builder
# keeps them as untagged parent images. A test removing the last image built on them removes
# them too, and a build running at that moment fails with "unable to find image sha256:…"
# (seen in a full run). Without the cache no build leans on another's layers; it costs the
# same ~3 s here. (PACKFY_SAMPLE_CACHE=1: env-up's image that holds the cached steps for the
# builds packfy-deploy makes.)
cache=(--no-cache)
[[ "${PACKFY_SAMPLE_CACHE:-0}" == 1 ]] && cache=()
DOCKER_BUILDKIT=0 docker build -q "${cache[@]}" -t "$image" "${build_args[@]}" "$context" >&2
echo "$image"
