# shellcheck shell=bash
# Docker engines: PACKFY_DOCKERD_COUNT (default 3) independent daemons standing in for
# several regions' hosts. Daemon 1 is the machine's own engine when one answers on the
# default socket (and PACKFY_PRIVATE_DOCKERD is not 1); every other daemon is a private
# dockerd with its own socket, data root, exec root, pidfile, containerd namespace and
# bridge br-pfN (10.199.N.1/24; the next free N when another checkout's daemon has that
# bridge). Published ports default to 127.0.0.1 (--ip).
#
# iptables: only the first private daemon manages iptables (when the kernel allows it, and
# PACKFY_DOCKERD_IPTABLES is not 0); the others run with --iptables=false so their rules
# never fight, and `-p 127.0.0.1:…` publishing goes through docker-proxy on every daemon.

SYSTEM_DOCKER_SOCK=/var/run/docker.sock

dockerd_paths() { # dockerd_paths N: sets d_name d_base d_sock d_exec d_pid d_log d_bridge d_addr
  local n="$1" rd
  rd="$(short_run_dir)"
  d_name="pf$n"
  d_base="$ENV_DIR/docker/$d_name"
  d_sock="$rd/docker-$d_name.sock"
  d_exec="$rd/docker-$d_name"
  d_pid="$RUN_DIR/dockerd-$d_name.pid"
  d_log="$LOG_DIR/dockerd-$d_name.log"
  local idx=$n
  [[ -s "$RUN_DIR/dockerd-$d_name.bridge" ]] && idx="$(cat "$RUN_DIR/dockerd-$d_name.bridge")"
  d_bridge="br-pf$idx"
  d_addr="10.199.$idx.1/24"
}

# A bridge is free when no dockerd runs on it and nothing is attached to it. A checkout
# whose daemons were killed (the end of a session kills them; CI then runs in another
# clone) leaves its containers' network namespaces mounted: their veths stay on its bridge
# with their addresses (10.199.M.2, .3…) alive, and a new daemon there would hand the same
# addresses out again — the host's packets would reach the dead containers.
bridge_free() {
  local br="br-pf$1"
  pgrep -f -- "--bridge $br( |\$)" >/dev/null && return 1
  [[ -z "$(ls -A "/sys/class/net/$br/brif" 2>/dev/null)" ]]
}

# Picks daemon N's bridge before it starts: br-pfN, unless it is not free (above); then
# the next free br-pfM (subnet 10.199.M.0/24).
dockerd_pick_bridge() {
  local n="$1" idx="$1"
  while ! bridge_free "$idx"; do idx=$((idx + 1)); done
  echo "$idx" >"$RUN_DIR/dockerd-pf$n.bridge"
  dockerd_paths "$n"
}

system_docker_usable() {
  [[ "${PACKFY_PRIVATE_DOCKERD:-0}" != 1 ]] && [[ -S "$SYSTEM_DOCKER_SOCK" ]] &&
    docker -H "unix://$SYSTEM_DOCKER_SOCK" info >/dev/null 2>&1
}

iptables_usable() {
  [[ "${PACKFY_DOCKERD_IPTABLES:-1}" != 0 ]] && command -v iptables >/dev/null &&
    iptables -t nat -S >/dev/null 2>&1 && iptables -t filter -S >/dev/null 2>&1
}

dockerd_answers() { docker -H "unix://$1" version >/dev/null 2>&1; }

# Creates (and remembers that we created) the bridge of daemon N, gives it a fixed MAC and
# its address, up. The fixed MAC matters: a bridge without one takes the lowest MAC of its
# ports, so it changes whenever a container comes or goes, and the containers' cached
# gateway entry goes stale: their packets to the host (through docker-proxy) are lost for
# seconds. (docker0, which dockerd creates itself, gets a fixed random MAC.)
bridge_up() {
  local mac
  mac="$(printf '02:70:66:00:%02x:01' "${d_bridge#br-pf}")"
  if ! ip link show "$d_bridge" >/dev/null 2>&1; then
    ip link add name "$d_bridge" address "$mac" type bridge || return 1
    touch "$RUN_DIR/bridge-$d_bridge.ours"
  fi
  [[ "$(cat "/sys/class/net/$d_bridge/address")" == "$mac" ]] || ip link set dev "$d_bridge" address "$mac" || return 1
  ip -4 addr show dev "$d_bridge" | grep "inet ${d_addr%/*}/" >/dev/null || ip addr add "$d_addr" dev "$d_bridge" || return 1
  ip link set "$d_bridge" up
}

# Starts private daemon N unless it already answers; does not wait for it.
# Prints "started" when it started one.
dockerd_start() {
  local n="$1" iptables="$2"
  dockerd_paths "$n"
  if pid_alive "$d_pid" dockerd; then
    return 0
  fi
  if [[ -S "$d_sock" ]] && dockerd_answers "$d_sock"; then
    fail "dockerd $d_name" "something answers on $d_sock but $d_pid names no live dockerd"
    return 1
  fi
  # Our own daemon was killed: its containers' namespaces are still mounted under its
  # exec root; unmounting them takes their veths off the bridge.
  umount_under "$d_exec"
  dockerd_pick_bridge "$n"
  bridge_up || {
    fail "dockerd $d_name" "could not set up bridge $d_bridge ($d_addr)"
    return 1
  }
  # A daemon without --iptables adds no FORWARD rules. Should the iptables-managing daemon
  # make the FORWARD policy DROP (with br_netfilter, even traffic within a bridge passes
  # FORWARD), this daemon's containers could no longer reach each other.
  if [[ "$iptables" == false ]] && iptables -S FORWARD >/dev/null 2>&1 &&
    ! iptables -C FORWARD -i "$d_bridge" -o "$d_bridge" -j ACCEPT 2>/dev/null; then
    iptables -I FORWARD -i "$d_bridge" -o "$d_bridge" -j ACCEPT && touch "$RUN_DIR/forward-$d_bridge.ours"
  fi
  mkdir -p "$d_base/data" "$d_exec"
  # Our own (empty) config file, so /etc/docker/daemon.json of the machine cannot interfere.
  [[ -f "$d_base/daemon.json" ]] || echo '{}' >"$d_base/daemon.json"
  rm -f "$d_sock"
  spawn - "$d_log" dockerd \
    --config-file "$d_base/daemon.json" \
    -H "unix://$d_sock" \
    --data-root "$d_base/data" \
    --exec-root "$d_exec" \
    --pidfile "$d_pid" \
    --bridge "$d_bridge" \
    --iptables="$iptables" --ip-masq="$iptables" \
    --ip 127.0.0.1 \
    --userland-proxy=true \
    --containerd-namespace "packfy-$d_name" \
    --containerd-plugins-namespace "packfy-$d_name-plugins" \
    --log-level warn
  echo started
}

dockerd_wait() {
  local n="$1" i
  dockerd_paths "$n"
  for ((i = 0; i < 300; i++)); do
    dockerd_answers "$d_sock" && return 0
    # Gone already (bad flag, pidfile clash…): no point waiting the full minute.
    if ((i > 25)) && ! pid_alive "$d_pid" dockerd && ! pgrep -f -- "--pidfile $d_pid" >/dev/null; then
      break
    fi
    sleep 0.2
  done
  fail "dockerd $d_name" "no answer on unix://$d_sock" "$d_log"
}

# Brings up the daemons; records DOCKER_HOST and PACKFY_DOCKER_HOSTS. Sets DOCKER_STARTED
# to the numbers of the daemons started by this call (they get a smoke test later).
docker_up() {
  local count i iptables first_private=1 hosts=() started=()
  count="$(dockerd_count)"
  DOCKER_STARTED=""
  if system_docker_usable; then
    log "docker: using the running engine on $SYSTEM_DOCKER_SOCK as daemon 1"
    hosts+=("unix://$SYSTEM_DOCKER_SOCK")
    first_private=2
    # The machine's engine owns iptables already.
    iptables=false
  elif iptables_usable; then
    iptables=true
  else
    log "docker: iptables unusable here: all daemons run with --iptables=false (docker-proxy publishes ports)"
    iptables=false
  fi
  for ((i = first_private; i <= count; i++)); do
    local ipt=false
    ((i == first_private)) && ipt="$iptables"
    local out
    out="$(dockerd_start "$i" "$ipt")" || return 1
    [[ "$out" == started ]] && started+=("$i")
  done
  for ((i = first_private; i <= count; i++)); do
    dockerd_wait "$i" || return 1
    dockerd_paths "$i"
    hosts+=("unix://$d_sock")
  done
  if ((${#started[@]})); then
    log "docker: started daemon(s) ${started[*]} of $count"
  else
    log "docker: $count daemon(s) already up"
  fi
  DOCKER_STARTED="${started[*]}"
  state_set docker "DOCKER_HOST=${hosts[0]}" "PACKFY_DOCKER_HOSTS=${hosts[*]}"
}

# Builds the sample image on every daemon just started and checks that a container's
# published loopback port answers /health: bridge networking and publishing work there.
docker_smoke() {
  local i host cid port ok
  for i in $DOCKER_STARTED; do
    dockerd_paths "$i"
    host="unix://$d_sock"
    if ! DOCKER_HOST="$host" "$ROOT/tests/env/build-sample.sh" env >>"$LOG_DIR/smoke-$d_name.log" 2>&1; then
      fail "dockerd $d_name" "building the sample image failed" "$LOG_DIR/smoke-$d_name.log"
      return 1
    fi
    cid="$(docker -H "$host" run -d -p 127.0.0.1::8080 --name "packfy-env-smoke-$d_name" packfy-sample:env 2>>"$LOG_DIR/smoke-$d_name.log")" || {
      fail "dockerd $d_name" "could not run a container" "$LOG_DIR/smoke-$d_name.log"
      return 1
    }
    port="$(docker -H "$host" port "$cid" 8080/tcp | head -n1 | sed 's/.*://')"
    ok=""
    wait_for 20 "the smoke container on $d_name" http_ok "http://127.0.0.1:$port/health" && ok=1
    docker -H "$host" rm -f "$cid" >/dev/null 2>&1 || true
    if [[ -z "$ok" ]]; then
      fail "dockerd $d_name" "a container's published port 127.0.0.1:$port did not answer /health" "$d_log"
      return 1
    fi
    log "docker: $d_name serves a published port (127.0.0.1:$port)"
  done
}

# Unmounts (lazily) everything mounted below directory $1, deepest first.
umount_under() {
  local m
  awk '{print $2}' /proc/mounts | { grep -E "^$1/" || true; } | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
}

docker_down() {
  local pidfile n sock
  for pidfile in "$RUN_DIR"/dockerd-pf*.pid; do
    [[ -e "$pidfile" ]] || continue
    n="${pidfile##*/dockerd-pf}"
    n="${n%.pid}"
    dockerd_paths "$n"
    if pid_alive "$d_pid" dockerd; then
      sock="unix://$d_sock"
      # Containers first, so dockerd's shutdown does not wait on their stop timeouts.
      local ids
      ids="$(docker -H "$sock" ps -aq 2>/dev/null || true)"
      [[ -n "$ids" ]] && docker -H "$sock" rm -f $ids >/dev/null 2>&1 || true
      log "docker: stopping $d_name"
    fi
    stop_pidfile "$d_pid" dockerd 30
    rm -f "$RUN_DIR/dockerd-$d_name.bridge"
  done
  # Leftover mounts of a daemon that was killed (netns, overlay) under our directories.
  umount_under "$ENV_DIR"
  umount_under "$(short_run_dir)"
  local marker br
  for marker in "$RUN_DIR"/forward-*.ours; do
    [[ -e "$marker" ]] || continue
    br="${marker##*/forward-}"
    br="${br%.ours}"
    # (as for the bridges below: another checkout's daemon on it now needs the rule)
    pgrep -f -- "--bridge $br( |\$)" >/dev/null ||
      iptables -D FORWARD -i "$br" -o "$br" -j ACCEPT 2>/dev/null || true
    rm -f "$marker"
  done
  for marker in "$RUN_DIR"/bridge-*.ours; do
    [[ -e "$marker" ]] || continue
    br="${marker##*/bridge-}"
    br="${br%.ours}"
    # A bridge we made, left by a killed run of ours, may since serve another checkout's
    # daemon (bridge_free let it take the bridge): that one keeps it.
    if pgrep -f -- "--bridge $br( |\$)" >/dev/null; then
      log "docker: bridge $br serves another checkout's daemon now; left to it"
    else
      ip link del "$br" 2>/dev/null && log "docker: removed bridge $br"
    fi
    rm -f "$marker"
  done
  rm -f "$STATE_DIR/docker.env"
}
