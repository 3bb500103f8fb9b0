# shellcheck shell=bash
# Two local image registries, Debian's docker-registry with configs of our own, on 127.0.0.1
# (free ports from 5000, or PACKFY_REGISTRY_PORT), storage under target/test-env/:
#
#   registry        anonymous push and pull                  PACKFY_REGISTRY
#   registry-auth   htpasswd login required (bcrypt, made    PACKFY_REGISTRY_AUTH,
#                   with apache2-utils' htpasswd), as a      PACKFY_REGISTRY_AUTH_USER,
#                   company registry after `docker login`    PACKFY_REGISTRY_AUTH_PASSWORD
#
# Dockerd treats loopback registries as insecure by default, so plain HTTP push/pull works
# from every daemon (the login goes in the engine's X-Registry-Auth header).

# registry_start NAME AUTH: starts registry NAME (AUTH: 1 for an htpasswd login) unless it
# answers already.
registry_start() {
  local name="$1" auth="$2" dir="$ENV_DIR/$1" pidf="$RUN_DIR/$1.pid" logf="$LOG_DIR/$1.log"
  local port user="" password="" login=()
  port="$(state_get "$name" PORT)"
  if [[ "$auth" == 1 ]]; then
    user="packfy-ci"
    password="$(state_get "$name" PACKFY_REGISTRY_AUTH_PASSWORD)"
    [[ -n "$password" ]] || password="reg-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    login=(-u "$user:$password")
  fi
  if [[ -n "$port" ]] && pid_alive "$pidf" docker-registry && registry_answers "$port" "${login[@]}"; then
    log "$name: already up on 127.0.0.1:$port"
    return 0
  fi
  stop_pidfile "$pidf" docker-registry 5
  # (the anonymous registry answers already when this one picks its port)
  port="$(free_port "${PACKFY_REGISTRY_PORT:-5000}")"
  mkdir -p "$dir/storage"
  local auth_config=""
  if [[ "$auth" == 1 ]]; then
    htpasswd -Bbn "$user" "$password" >"$dir/htpasswd" || {
      fail "$name" "htpasswd could not write $dir/htpasswd"
      return 1
    }
    auth_config="auth:
  htpasswd:
    realm: packfy-test
    path: $dir/htpasswd"
  fi
  cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: info
  fields:
    service: packfy-test-$name
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
$auth_config
EOF
  spawn "$pidf" "$logf" docker-registry serve "$dir/config.yml"
  if ! wait_alive 30 "the $name on 127.0.0.1:$port" "$pidf" registry_answers "$port" "${login[@]}"; then
    fail "$name" "no answer on http://127.0.0.1:$port/v2/" "$logf"
    return 1
  fi
  log "$name: up on 127.0.0.1:$port${user:+ (login $user)}"
  if [[ "$auth" == 1 ]]; then
    # Without a login the registry must refuse: otherwise the tests prove nothing.
    if curl -fs -o /dev/null --max-time 2 "http://127.0.0.1:$port/v2/"; then
      fail "$name" "answers without a login on 127.0.0.1:$port" "$logf"
      return 1
    fi
    state_set "$name" "PORT=$port" "PACKFY_REGISTRY_AUTH=127.0.0.1:$port" \
      "PACKFY_REGISTRY_AUTH_USER=$user" "PACKFY_REGISTRY_AUTH_PASSWORD=$password"
  else
    state_set "$name" "PORT=$port" "PACKFY_REGISTRY=127.0.0.1:$port"
  fi
}

# registry_answers PORT [CURL ARGS]: /v2/ answers 2xx.
registry_answers() {
  local port="$1"
  shift
  curl -fsS -o /dev/null --max-time 2 "$@" "http://127.0.0.1:$port/v2/"
}

registry_up() {
  registry_start registry 0 && registry_start registry-auth 1
}

registry_down() {
  local name
  for name in registry registry-auth; do
    if pid_alive "$RUN_DIR/$name.pid" docker-registry; then log "$name: stopping"; fi
    stop_pidfile "$RUN_DIR/$name.pid" docker-registry 10
    rm -f "$STATE_DIR/$name.env"
  done
}
