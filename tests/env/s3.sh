# shellcheck shell=bash
# An S3-compatible object store on loopback: s3s-fs (the file-system server of the s3s crate,
# a maintained S3 server library for Rust), speaking S3 over HTTP with SigV4 authentication,
# its buckets directories under target/test-env/s3. Port 9014 or the next free one (or
# PACKFY_S3_PORT).
#
# Why s3s-fs: it installs from crates.io alone with the Rust toolchain the project already
# needs (`cargo install`, ~3 min cold on 2 cores, then cached under
# $PACKFY_CACHE/s3s-fs-<version>), checks every request's signature against one access key,
# and does the multipart uploads and streamed GETs the backup store relies on. SeaweedFS or
# MinIO from the Go module proxy would take far longer to build and bring a cluster's worth
# of parts; moto is a mock.
#
# Exports PACKFY_S3_ENDPOINT, PACKFY_S3_BUCKET (made at start), PACKFY_S3_ACCESS_KEY_ID and
# PACKFY_S3_SECRET_ACCESS_KEY. The secret is unlike every other name on purpose: tests look
# for it in output that must never show it.
S3S_VERSION=0.14.1
S3_BUCKET=packfy-test
S3_ACCESS_KEY_ID=packfy-test-key
S3_SECRET="${PACKFY_S3_SECRET:-s3-secret-5d0e8b17}"
S3S_ROOT="${PACKFY_CACHE:-${HOME:-/root}/.cache/packfy}/s3s-fs-$S3S_VERSION"
S3S_BIN="$S3S_ROOT/bin/s3s-fs"

# Builds s3s-fs once into the cache (one build at a time: two checkouts may ask at once).
s3s_install() {
  [[ -x "$S3S_BIN" ]] && return 0
  mkdir -p "$S3S_ROOT"
  (
    exec 9>"$S3S_ROOT/.lock"
    flock 9
    [[ -x "$S3S_BIN" ]] && exit 0
    log "s3: building s3s-fs $S3S_VERSION from crates.io into $S3S_ROOT (~3 min cold; log $S3S_ROOT/install.log)"
    nice -n 10 cargo install s3s-fs --version "$S3S_VERSION" --features binary --locked \
      --root "$S3S_ROOT" --target-dir "$S3S_ROOT/build" >"$S3S_ROOT/install.log" 2>&1
  )
}

s3_ok() {
  # Any answer from the server (403 without a signature) means it listens.
  curl -sS -o /dev/null --max-time 2 "http://127.0.0.1:$1/"
}

s3_up() {
  local dir="$ENV_DIR/s3" pidf="$RUN_DIR/s3s-fs.pid" logf="$LOG_DIR/s3.log" port
  port="$(state_get s3 PORT)"
  if [[ -n "$port" ]] && pid_alive "$pidf" s3s-fs && s3_ok "$port" &&
    [[ "$(state_get s3 PACKFY_S3_SECRET_ACCESS_KEY)" == "$S3_SECRET" ]]; then
    log "s3: already up on 127.0.0.1:$port"
    return 0
  fi
  stop_pidfile "$pidf" s3s-fs 5
  if ! s3s_install; then
    fail s3 "cargo install s3s-fs $S3S_VERSION failed" "$S3S_ROOT/install.log"
    return 1
  fi
  port="$(free_port "${PACKFY_S3_PORT:-9014}")"
  # A bucket is a directory of the server's root.
  mkdir -p "$dir/$S3_BUCKET"
  spawn "$pidf" "$logf" env RUST_LOG=warn "$S3S_BIN" --host 127.0.0.1 --port "$port" \
    --access-key "$S3_ACCESS_KEY_ID" --secret-key "$S3_SECRET" "$dir"
  if ! wait_alive 30 "s3s-fs on 127.0.0.1:$port" "$pidf" s3_ok "$port"; then
    fail s3 "no answer on http://127.0.0.1:$port/" "$logf"
    return 1
  fi
  log "s3: up on 127.0.0.1:$port (s3s-fs $S3S_VERSION, bucket $S3_BUCKET)"
  state_set s3 "PORT=$port" "PACKFY_S3_ENDPOINT=http://127.0.0.1:$port" \
    "PACKFY_S3_BUCKET=$S3_BUCKET" "PACKFY_S3_ACCESS_KEY_ID=$S3_ACCESS_KEY_ID" \
    "PACKFY_S3_SECRET_ACCESS_KEY=$S3_SECRET"
}

s3_down() {
  if pid_alive "$RUN_DIR/s3s-fs.pid" s3s-fs; then log "s3: stopping"; fi
  stop_pidfile "$RUN_DIR/s3s-fs.pid" s3s-fs 10
  rm -f "$STATE_DIR/s3.env"
}
