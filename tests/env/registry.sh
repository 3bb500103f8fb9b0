# shellcheck shell=bash
# A local image registry: Debian's docker-registry with a config of our own (the packaged
# one demands htpasswd auth), on 127.0.0.1 (port 5000 or the next free one, or
# PACKFY_REGISTRY_PORT), storage under target/test-env/registry. Dockerd treats loopback
# registries as insecure by default, so plain HTTP push/pull works from every daemon.

registry_up() {
  local dir="$ENV_DIR/registry" pidf="$RUN_DIR/registry.pid" logf="$LOG_DIR/registry.log" port
  port="$(state_get registry PORT)"
  if [[ -n "$port" ]] && pid_alive "$pidf" docker-registry && http_ok "http://127.0.0.1:$port/v2/"; then
    log "registry: already up on 127.0.0.1:$port"
    return 0
  fi
  stop_pidfile "$pidf" docker-registry 5
  port="$(free_port "${PACKFY_REGISTRY_PORT:-5000}")"
  mkdir -p "$dir/storage"
  cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: info
  fields:
    service: packfy-test-registry
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:$port
  headers:
    X-Content-Type-Options: [nosniff]
EOF
  spawn "$pidf" "$logf" docker-registry serve "$dir/config.yml"
  if ! wait_alive 30 "the registry on 127.0.0.1:$port" "$pidf" http_ok "http://127.0.0.1:$port/v2/"; then
    fail registry "no answer on http://127.0.0.1:$port/v2/" "$logf"
    return 1
  fi
  log "registry: up on 127.0.0.1:$port"
  state_set registry "PORT=$port" "PACKFY_REGISTRY=127.0.0.1:$port"
}

registry_down() {
  if pid_alive "$RUN_DIR/registry.pid" docker-registry; then log "registry: stopping"; fi
  stop_pidfile "$RUN_DIR/registry.pid" docker-registry 10
  rm -f "$STATE_DIR/registry.env"
}
