#!/usr/bin/env bash
# `make env-status`: which parts of the test environment are up. Exits 1 if any is down.
set -uo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
source "$here/lib.sh"
source "$here/docker.sh"
source "$here/registry.sh"
source "$here/haproxy.sh"
source "$here/postgres.sh"
source "$here/s3.sh"
source "$here/prometheus.sh"

down=0
report() { printf '%-10s %-4s %s\n' "$1" "$2" "$3"; [[ "$2" == up ]] || down=1; }

count="$(dockerd_count)"
for ((i = 1; i <= count; i++)); do
  dockerd_paths "$i"
  if pid_alive "$d_pid" dockerd && dockerd_answers "$d_sock"; then
    report "docker $i" up "unix://$d_sock (bridge $d_bridge)"
  elif ((i == 1)) && system_docker_usable; then
    report "docker $i" up "unix://$SYSTEM_DOCKER_SOCK (the machine's engine)"
  else
    report "docker $i" down "$d_log"
  fi
done
port="$(state_get registry PORT)"
if [[ -n "$port" ]] && pid_alive "$RUN_DIR/registry.pid" docker-registry && http_ok "http://127.0.0.1:$port/v2/"; then
  report registry up "127.0.0.1:$port"
else
  report registry down "$LOG_DIR/registry.log"
fi
port="$(state_get registry-auth PORT)"
if [[ -n "$port" ]] && pid_alive "$RUN_DIR/registry-auth.pid" docker-registry &&
  registry_answers "$port" -u "$(state_get registry-auth PACKFY_REGISTRY_AUTH_USER):$(state_get registry-auth PACKFY_REGISTRY_AUTH_PASSWORD)"; then
  report registry-auth up "127.0.0.1:$port (login required)"
else
  report registry-auth down "$LOG_DIR/registry-auth.log"
fi
sock="$(state_get haproxy PACKFY_HAPROXY_SOCKET)"
if [[ -n "$sock" ]] && pid_alive "$RUN_DIR/haproxy.pid" haproxy && haproxy_answers "$sock"; then
  report haproxy up "$(state_get haproxy PACKFY_HAPROXY_FRONTENDS) (runtime API $sock)"
else
  report haproxy down "$LOG_DIR/haproxy.log"
fi
port="$(state_get prometheus PORT)"
if [[ -n "$port" ]] && pid_alive "$RUN_DIR/prometheus.pid" prometheus && prometheus_ready "$port"; then
  report prometheus up "http://127.0.0.1:$port (scrapes HAProxy's exporter every 1s)"
else
  report prometheus down "$LOG_DIR/prometheus.log"
fi
url="$(state_get postgres PACKFY_PG_URL)"
if [[ -n "$url" ]] && PGCONNECT_TIMEOUT=3 psql "$url" -Atqc 'select 1' >/dev/null 2>&1; then
  report postgres up "${url/:$PG_PASSWORD@/:***@}"
else
  report postgres down "$LOG_DIR/postgres.log"
fi
port="$(state_get s3 PORT)"
if [[ -n "$port" ]] && pid_alive "$RUN_DIR/s3s-fs.pid" s3s-fs && s3_ok "$port"; then
  report s3 up "http://127.0.0.1:$port (bucket $(state_get s3 PACKFY_S3_BUCKET))"
else
  report s3 down "$LOG_DIR/s3.log"
fi
if [[ -x "$SAMPLE_BIN" ]]; then report sample up "$SAMPLE_BIN"; else report sample down "make sample"; fi
[[ -f "$ENV_FILE" ]] && echo "env: . $ENV_FILE"
exit "$down"
