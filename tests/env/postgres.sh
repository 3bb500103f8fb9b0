# shellcheck shell=bash
# PostgreSQL (Debian's, v15) on loopback: a cluster of our own under target/test-env/pg,
# run as the `postgres` user (root cannot run postgres), on port 55432 or the next free one
# (or PACKFY_PG_PORT). Database `packfy`, owned by role `packfy` (password $PG_PASSWORD, SCRAM
# on 127.0.0.1): PACKFY_PG_URL works with psql and pg_dump as they are.
#
# Containers reach it too (a release step's migration connects to it): it also listens on
# the gateway address of each Docker engine's `bridge` network (10.199.N.1 for the private
# daemons), and pg_hba lets role packfy into database packfy from those subnets only, by
# SCRAM. A container's URL is PACKFY_PG_URL with 127.0.0.1 replaced by its gateway. The
# engines come up first (up.sh's order); when their bridges change, the server restarts.
#
# The password is unlike the user and database names on purpose: tests look for it in output
# that must never show it, and a password of `packfy` would be found in every line that
# names the app.
PG_PASSWORD="${PACKFY_PG_PASSWORD:-pw-7c41e9d2}"

pg_bindir() {
  local d
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)"
  [[ -x "$d/pg_ctl" ]] && echo "$d"
}

pg_run() { runuser -u postgres -- "$@"; }

# "GATEWAY SUBNET" of each Docker engine's IPv4 bridge network, one a line.
pg_bridges() {
  local h
  for h in $(state_get docker PACKFY_DOCKER_HOSTS); do
    docker -H "$h" network inspect bridge \
      -f '{{range .IPAM.Config}}{{.Gateway}} {{.Subnet}}{{"\n"}}{{end}}' 2>/dev/null
  done | awk 'NF == 2 && $1 !~ /:/' | sort -u
}

# pg_hba_bridges DATA SUBNET…: the bridges' rules (role and database packfy, SCRAM) in place
# of the ones written before.
pg_hba_bridges() {
  local hba="$1/pg_hba.conf" s
  shift
  pg_run sed -i '/# packfy: docker bridge$/d' "$hba" || return 1
  for s in "$@"; do
    echo "host packfy packfy $s scram-sha-256 # packfy: docker bridge" | pg_run tee -a "$hba" >/dev/null || return 1
  done
}

postgres_up() {
  local bin dir="$ENV_DIR/pg" data logf="$LOG_DIR/postgres.log" port sockdir url
  data="$dir/data"
  bin="$(pg_bindir)" || {
    fail postgres "no /usr/lib/postgresql/*/bin/pg_ctl (is the postgresql package installed?)"
    return 1
  }
  id postgres >/dev/null 2>&1 || {
    fail postgres "there is no postgres user to run the server as"
    return 1
  }
  sockdir="$(short_run_dir)/pg"
  port="$(state_get postgres PORT)"
  url="postgresql://packfy:$PG_PASSWORD@127.0.0.1:$port/packfy"
  local bridges listen subnets=()
  bridges="$(pg_bridges)"
  listen="127.0.0.1$(awk '{printf ",%s", $1}' <<<"$bridges")"
  [[ -n "$bridges" ]] && mapfile -t subnets < <(awk '{print $2}' <<<"$bridges")
  if [[ -n "$port" ]] && [[ "$(state_get postgres LISTEN)" == "$listen" ]] &&
    pg_run "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1 &&
    PGCONNECT_TIMEOUT=3 psql "$url" -Atqc 'select 1' >/dev/null 2>&1; then
    log "postgres: already up on 127.0.0.1:$port"
    return 0
  fi
  mkdir -p "$dir" "$sockdir"
  chown postgres: "$dir" "$sockdir"
  # The postgres user must be able to reach its data directory.
  if ! pg_run test -x "$dir"; then
    fail postgres "user postgres cannot enter $dir (a parent directory is not world-searchable)"
    return 1
  fi
  if [[ ! -s "$data/PG_VERSION" ]]; then
    rm -rf "$data"
    if ! pg_run "$bin/initdb" -D "$data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      --encoding=UTF8 --locale=C.UTF-8 --no-sync >"$LOG_DIR/initdb.log" 2>&1; then
      fail postgres "initdb failed" "$LOG_DIR/initdb.log"
      return 1
    fi
  fi
  if ! pg_hba_bridges "$data" "${subnets[@]}"; then
    fail postgres "could not write the bridges' rules into $data/pg_hba.conf"
    return 1
  fi
  # A server left from a killed run (or one listening on other bridges) would hold the data
  # directory: stop it first.
  pg_run "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1 && pg_run "$bin/pg_ctl" -D "$data" stop -m fast >/dev/null 2>&1
  port="$(free_port "${PACKFY_PG_PORT:-55432}")"
  touch "$logf" && chown postgres: "$logf"
  # -w waits until it accepts connections; setsid keeps make's Ctrl-C away from it.
  if ! pg_run setsid "$bin/pg_ctl" -D "$data" -l "$logf" -w -t 60 start \
    -o "-c listen_addresses=$listen -c port=$port -c unix_socket_directories=$sockdir -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    >>"$logf" 2>&1; then
    fail postgres "pg_ctl start failed" "$logf"
    return 1
  fi
  local sql
  sql="DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'packfy') THEN
    CREATE ROLE packfy LOGIN CREATEDB;
  END IF;
  -- also on a cluster made before the password changed
  ALTER ROLE packfy PASSWORD '$PG_PASSWORD';
END \$\$;"
  if ! pg_run psql -h "$sockdir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -qc "$sql" >>"$logf" 2>&1 ||
    ! { pg_run psql -h "$sockdir" -p "$port" -U postgres -d postgres -Atqc "SELECT 1 FROM pg_database WHERE datname = 'packfy'" | grep 1 >/dev/null ||
      pg_run psql -h "$sockdir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -qc 'CREATE DATABASE packfy OWNER packfy' >>"$logf" 2>&1; }; then
    fail postgres "could not create role and database packfy" "$logf"
    return 1
  fi
  url="postgresql://packfy:$PG_PASSWORD@127.0.0.1:$port/packfy"
  if ! PGCONNECT_TIMEOUT=3 psql "$url" -Atqc 'select 1' >>"$logf" 2>&1; then
    fail postgres "cannot connect as $url" "$logf"
    return 1
  fi
  log "postgres: up on 127.0.0.1:$port (database packfy; also on ${listen#127.0.0.1,} for the containers)"
  state_set postgres "PORT=$port" "LISTEN=$listen" "PACKFY_PG_URL=$url"
}

postgres_down() {
  local bin data="$ENV_DIR/pg/data"
  bin="$(pg_bindir)" || return 0
  [[ -s "$data/postmaster.pid" ]] || {
    rm -f "$STATE_DIR/postgres.env"
    return 0
  }
  if pg_run "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    log "postgres: stopping"
    pg_run "$bin/pg_ctl" -D "$data" stop -m fast -w -t 30 >/dev/null 2>&1 ||
      pg_run "$bin/pg_ctl" -D "$data" stop -m immediate >/dev/null 2>&1 || true
  fi
  rm -f "$STATE_DIR/postgres.env"
}
