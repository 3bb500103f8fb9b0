#!/usr/bin/env bash
# Builds the sample app's static binary (tests/sample-app, its own target dir) and prints
# its path. Static (crt-static, glibc) so it runs alone in a FROM scratch image.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Called from inside `cargo test` too: none of the outer build's settings may leak in.
unset CARGO_TARGET_DIR CARGO_BUILD_TARGET CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS RUSTC_WRAPPER RUSTC_WORKSPACE_WRAPPER
export RUSTFLAGS='-C target-feature=+crt-static'
export CARGO_TARGET_DIR="$SAMPLE_TARGET_DIR"

# Several tests may build at once: cargo's own lock serialises them.
if ! out="$(cargo build --release --locked --quiet --manifest-path "$SAMPLE_DIR/Cargo.toml" \
  --target x86_64-unknown-linux-gnu 2>&1)"; then
  printf '%s\n' "$out" >&2
  echo "sample-bin.sh: cargo build of tests/sample-app failed" >&2
  exit 1
fi
[[ -x "$SAMPLE_BIN" ]] || {
  echo "sample-bin.sh: $SAMPLE_BIN missing after the build" >&2
  exit 1
}
echo "$SAMPLE_BIN"
