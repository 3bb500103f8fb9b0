# shellcheck shell=bash
# Remote hosts: PACKFY_HOSTS_COUNT (default 3) network namespaces on this machine, each with
# its own address, dockerd and sshd, plus two load-balancer namespaces `lb` and `lb2`, each
# with its own sshd and an HAProxy that does not retry (the same configuration on both, each
# with its frontends on its own address; lb2 is for the tests of several load balancers). The runner reaches them only through ssh:// (the dockerds listen on
# unix sockets only; `docker system dial-stdio` over ssh is the way in).
#
#   (Processes enter only the network namespace, with nsenter: `ip netns exec` also
#   remounts /sys, which hides the cgroup mounts dockerd needs.)
#
#   root namespace ── bridge brh-ID 10.201.S.1/24 ─┬─ veth ─ namespace packfy-ID-h1 10.201.S.11
#                                                  ├─ …      namespace packfy-ID-hN 10.201.S.1N
#                                                  ├─ veth ─ namespace packfy-ID-lb 10.201.S.10
#                                                  └─ veth ─ namespace packfy-ID-lb2 10.201.S.9
#
# ID is a checksum of this checkout's path (several checkouts never share namespaces); S is
# 0, or the next /24 of 10.201.0.0/16 whose route nothing else on this machine holds.
#
# The runner's packets to a host's address are refused unless they go to port 22.
#
# env-up writes under target/test-env/hosts: an SSH key pair (no passphrase), known_hosts
# (every sshd's host key, under its address and its names) and an ssh_config mapping the
# names to the addresses, exported as PACKFY_SSH_CONFIG; packfy-deploy passes it to ssh
# as `-F`. Names: hN.packfy.test, and the committed regions' hosts
# (mexico-docker-N.packfy.example, colombia-docker-N.packfy.example) on the same namespaces;
# lb.packfy.test and lb2.packfy.test for the load balancers. Logins are `root` with the key.
#
# The registry: dockerd pulls from `127.0.0.1:PORT/…` (insecure by default for loopback)
# on every host, because in each host namespace a socat listens on 127.0.0.1:PORT and
# carries each connection into the root namespace's registry (the same for the registry that
# requires a login, on its own port). One image name is then
# valid on the runner and on every host; nothing else of the root namespace is reachable.
#
# A killed run leaves its namespaces with dead daemons and maybe live containers: env-up
# takes down whatever of ours it finds not answering (the processes in the namespace, the
# containers' processes in the daemon's cgroup parent packfy-ID-hN, the namespace) and
# builds it again.

hosts_id() { printf '%04x' $(($(printf '%s' "$ENV_DIR" | cksum | cut -d' ' -f1) % 65536)); }
hosts_count() { count_knob PACKFY_HOSTS_COUNT 3 8; }

hosts_vars() { # sets h_id h_dir h_bridge h_root_ns
  h_id="$(hosts_id)"
  h_dir="$ENV_DIR/hosts"
  h_bridge="brh-$h_id"
  h_root_ns="packfy-$h_id-root"
}

host_paths() { # host_paths NAME (h1…hN, lb or lb2): sets hp_ns hp_veth hp_addr hp_sock hp_exec …
  local name="$1" rd subnet
  rd="$(short_run_dir)"
  hosts_vars
  subnet="$(state_get hosts SUBNET)"
  subnet="${subnet:-${h_subnet:-0}}"
  hp_name="$name"
  hp_ns="packfy-$h_id-$name"
  hp_veth="vh$h_id$name"
  case "$name" in
  lb) hp_addr="10.201.$subnet.10" ;;
  lb2) hp_addr="10.201.$subnet.9" ;;
  *) hp_addr="10.201.$subnet.$((10 + ${name#h}))" ;;
  esac
  hp_gw="10.201.$subnet.1"
  hp_sock="$rd/docker-$h_id-$name.sock"
  hp_exec="$rd/docker-$h_id-$name"
  hp_data="$h_dir/$name/data"
  hp_dpid="$RUN_DIR/dockerd-$h_id-$name.pid"
  hp_spid="$RUN_DIR/sshd-$h_id-$name.pid"
  hp_rpid="$RUN_DIR/regfwd-$h_id-$name.pid"
  hp_apid="$RUN_DIR/regfwd-auth-$h_id-$name.pid"
  hp_cgroup="packfy-$h_id-$name"
}

ns_exists() { [[ -e "/run/netns/$1" ]]; }

# The /24 of 10.201.0.0/16 to use: the one recorded, else the first whose route nobody holds.
hosts_pick_subnet() {
  local s
  s="$(state_get hosts SUBNET)"
  if [[ -n "$s" ]] && ip link show "$h_bridge" >/dev/null 2>&1; then
    echo "$s"
    return
  fi
  for ((s = 0; s < 256; s++)); do
    [[ -z "$(ip -4 route show to match "10.201.$s.1" | grep -v '^default')" ]] && {
      echo "$s"
      return
    }
  done
  return 1
}

# Kills everything a host namespace of ours holds: containers' processes (in the daemon's
# cgroup parent, cgroup v1 or v2), processes in the namespace, then the namespace and veth.
host_wipe() {
  local pids cg
  if ns_exists "$hp_ns"; then
    pids="$(ip netns pids "$hp_ns" 2>/dev/null || true)"
    # shellcheck disable=SC2086
    [[ -n "$pids" ]] && kill -KILL $pids 2>/dev/null || true
  fi
  for cg in /sys/fs/cgroup/"$hp_cgroup" /sys/fs/cgroup/*/"$hp_cgroup"; do
    [[ -d "$cg" ]] || continue
    find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
    sleep 0.2
    find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  umount_under "$hp_exec"
  umount_under "$h_dir/$hp_name"
  ns_exists "$hp_ns" && ip netns del "$hp_ns"
  ip link del "$hp_veth" 2>/dev/null || true
  rm -f "$hp_dpid" "$hp_spid" "$hp_rpid" "$hp_apid" "$hp_sock"
}

host_ns_up() { # the namespace, its veth on the bridge, its address
  ns_exists "$hp_ns" && return 0
  ip netns add "$hp_ns" || return 1
  ip link add "$hp_veth" type veth peer name eth0 netns "$hp_ns" || return 1
  ip link set "$hp_veth" master "$h_bridge" up || return 1
  ip -n "$hp_ns" addr add "$hp_addr/24" dev eth0 || return 1
  ip -n "$hp_ns" link set lo up || return 1
  ip -n "$hp_ns" link set eth0 up || return 1
  ip -n "$hp_ns" route add default via "$hp_gw" || return 1
  # The runner (the gateway address) reaches a host only through sshd: a health check or a
  # request sent from the runner straight to a container is refused, so a test catches it.
  # The lb namespaces and the other hosts are not the runner, and reach the containers.
  if [[ "$hp_name" != lb* ]]; then
    nsenter --net="/run/netns/$hp_ns" iptables -A INPUT -s "$hp_gw" -p tcp ! --dport 22 -j REJECT --reject-with tcp-reset
  fi
}

host_sshd_up() {
  local d="$h_dir/$hp_name"
  pid_alive "$hp_spid" sshd && return 0
  # Each host has its own home: sshd's bash sources ~/.bashrc even for `ssh host cmd`, and
  # without this that is the runner's own (root's, here ~0.1 s of `pyenv init`), which no real
  # host would run; every login's session would pay for it.
  mkdir -p "$d" "$d/home" /run/sshd
  [[ -f "$d/ssh_host_ed25519_key" ]] || ssh-keygen -q -t ed25519 -N '' -C "$hp_name.packfy.test" -f "$d/ssh_host_ed25519_key" || return 1
  cat >"$d/sshd_config" <<EOF
# Generated by tests/env/hosts.sh
ListenAddress $hp_addr:22
HostKey $d/ssh_host_ed25519_key
PidFile $hp_spid
AuthorizedKeysFile $h_dir/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
SetEnv DOCKER_HOST=unix://$hp_sock HOME=$d/home
LogLevel VERBOSE
MaxStartups 100:30:200
MaxSessions 100
EOF
  nsenter --net="/run/netns/$hp_ns" /usr/sbin/sshd -f "$d/sshd_config" -E "$LOG_DIR/sshd-$hp_name.log" || {
    fail "hosts" "sshd of $hp_name did not start" "$LOG_DIR/sshd-$hp_name.log"
    return 1
  }
}

host_dockerd_up() {
  pid_alive "$hp_dpid" dockerd && return 0
  mkdir -p "$hp_data" "$hp_exec" "$h_dir/$hp_name"
  [[ -f "$h_dir/$hp_name/daemon.json" ]] || echo '{}' >"$h_dir/$hp_name/daemon.json"
  rm -f "$hp_sock"
  # In its own network namespace the daemon's default bridge docker0 is its own; published
  # ports go through docker-proxy on the address the deploy asks for.
  spawn - "$LOG_DIR/dockerd-$h_id-$hp_name.log" nsenter --net="/run/netns/$hp_ns" dockerd \
    --config-file "$h_dir/$hp_name/daemon.json" \
    -H "unix://$hp_sock" \
    --data-root "$hp_data" \
    --exec-root "$hp_exec" \
    --pidfile "$hp_dpid" \
    --iptables=false --ip-masq=false --userland-proxy=true \
    --cgroup-parent "$hp_cgroup" \
    --containerd-namespace "packfy-$h_id-$hp_name" \
    --containerd-plugins-namespace "packfy-$h_id-$hp_name-plugins" \
    --log-level warn
}

host_regfwd_up() { # host_regfwd_up PIDFILE PORT: a registry on 127.0.0.1:PORT inside the namespace
  local pidf="$1" port="$2"
  [[ -n "$port" ]] || return 0
  pid_alive "$pidf" socat && return 0
  spawn "$pidf" "$LOG_DIR/regfwd-$hp_name-$port.log" nsenter --net="/run/netns/$hp_ns" socat \
    "TCP-LISTEN:$port,bind=127.0.0.1,fork,reuseaddr" \
    "EXEC:nsenter --net=/run/netns/$h_root_ns socat STDIO TCP\:127.0.0.1\:$port"
}

hosts_haproxy_config() { # the lb's HAProxy: no retries, no redispatch
  local sock="$1" lanes="$2" i
  # No retries: a deploy that sends a request to a server that cannot answer it fails
  # that request, and the tests count it.
  haproxy_head "$sock" 0
  for ((i = 1; i <= lanes; i++)); do
    cat <<EOF

frontend fe_hosts_t$i
    bind $hp_addr:$((8000 + i))
    default_backend hosts_t$i

backend hosts_t$i
    balance roundrobin
    option httpchk GET /health
    http-check expect status 200

# The lane's blue-green preview (HAProxy makes no backend at run time).
frontend fe_hosts_t${i}_preview
    bind $hp_addr:$((8100 + i))
    default_backend hosts_t${i}_preview

backend hosts_t${i}_preview
    balance roundrobin
    option httpchk GET /health
    http-check expect status 200
EOF
  done
}

hosts_lb_haproxy_up() { # hosts_lb_haproxy_up LANES NAME (lb or lb2; host_paths NAME done)
  local lanes="$1" name="$2" cfg="$h_dir/$2/haproxy.cfg" pidf="$RUN_DIR/haproxy-$h_id-$2.pid"
  h_lb_sock="$(short_run_dir)/haproxy-$h_id-$name.sock"
  mkdir -p "$h_dir/$name"
  hosts_haproxy_config "$h_lb_sock" "$lanes" >"$cfg.new"
  if pid_alive "$pidf" haproxy && cmp -s "$cfg.new" "$cfg" && haproxy_answers "$h_lb_sock"; then
    rm -f "$cfg.new"
    return 0
  fi
  mv "$cfg.new" "$cfg"
  stop_pidfile "$pidf" haproxy 10
  rm -f "$h_lb_sock"
  spawn "$pidf" "$LOG_DIR/haproxy-$name.log" nsenter --net="/run/netns/$hp_ns" haproxy -db -f "$cfg"
  wait_alive 20 "the $name's HAProxy" "$pidf" haproxy_answers "$h_lb_sock" ||
    fail "hosts" "the $name namespace's HAProxy did not answer on $h_lb_sock" "$LOG_DIR/haproxy-$name.log"
}

# ssh_ok NAME: the runner logs in with the generated files and reaches the host's dockerd.
ssh_ok() {
  ssh -F "$h_dir/ssh_config" -o ConnectTimeout=3 "$1" "${2:-true}" >/dev/null 2>&1
}

hosts_up() {
  local count lanes i name all names=() addrs=() started=0 reg_port auth_port
  count="$(hosts_count)"
  lanes="${PACKFY_HOSTS_LANES:-4}"
  hosts_vars
  reg_port="$(state_get registry PORT)"
  auth_port="$(state_get registry-auth PORT)"
  mkdir -p "$h_dir"
  ns_exists "$h_root_ns" || ip netns attach "$h_root_ns" $$ || {
    fail "hosts" "cannot name the root network namespace (ip netns attach)"
    return 1
  }
  h_subnet="$(hosts_pick_subnet)" || {
    fail "hosts" "no free /24 in 10.201.0.0/16 (every one is routed already)"
    return 1
  }
  if ! ip link show "$h_bridge" >/dev/null 2>&1; then
    ip link add name "$h_bridge" type bridge || return 1
    ip addr add "10.201.$h_subnet.1/24" dev "$h_bridge" || return 1
  fi
  ip link set "$h_bridge" up
  state_set hosts "SUBNET=$h_subnet"
  [[ -f "$h_dir/id_ed25519" ]] || ssh-keygen -q -t ed25519 -N '' -C "packfy-test-runner" -f "$h_dir/id_ed25519" || return 1
  cp "$h_dir/id_ed25519.pub" "$h_dir/authorized_keys"
  all=(lb lb2)
  for ((i = 1; i <= count; i++)); do all+=("h$i"); done
  for name in "${all[@]}"; do
    host_paths "$name"
    # A namespace of a killed run: its daemons are dead; start it over from nothing.
    if ns_exists "$hp_ns" && { ! pid_alive "$hp_spid" sshd || { [[ "$name" != lb* ]] && ! pid_alive "$hp_dpid" dockerd; }; }; then
      log "hosts: $name was left by a killed run; wiping it"
      host_wipe
    fi
    ns_exists "$hp_ns" || started=1
    host_ns_up || {
      fail "hosts" "could not create namespace $hp_ns ($hp_addr)"
      return 1
    }
    host_sshd_up || return 1
    if [[ "$name" != lb* ]]; then
      host_dockerd_up || return 1
      host_regfwd_up "$hp_rpid" "$reg_port" || return 1
      host_regfwd_up "$hp_apid" "$auth_port" || return 1
    fi
  done
  # known_hosts and ssh_config
  : >"$h_dir/known_hosts.new"
  {
    echo "# Generated by tests/env/hosts.sh: the test hosts (network namespaces of this machine)."
    for name in "${all[@]}"; do
      local aliases
      host_paths "$name"
      aliases="$name.packfy.test"
      [[ "$name" == h* ]] && aliases+=" mexico-docker-${name#h}.packfy.example colombia-docker-${name#h}.packfy.example"
      printf '%s %s\n' "$hp_addr,${aliases// /,}" "$(cut -d' ' -f1,2 "$h_dir/$name/ssh_host_ed25519_key.pub")" >>"$h_dir/known_hosts.new"
      printf '\nHost %s\n    HostName %s\n' "$aliases" "$hp_addr"
      [[ "$name" == h* ]] && { names+=("$name.packfy.test"); addrs+=("$hp_addr"); }
    done
    printf '\nHost *.packfy.test *.packfy.example\n'
    printf '    User root\n    IdentityFile %s\n    IdentitiesOnly yes\n' "$h_dir/id_ed25519"
    printf '    UserKnownHostsFile %s\n    StrictHostKeyChecking yes\n' "$h_dir/known_hosts"
    printf '    BatchMode yes\n    ConnectTimeout 5\n    ServerAliveInterval 2\n    ServerAliveCountMax 3\n'
  } >"$h_dir/ssh_config"
  mv "$h_dir/known_hosts.new" "$h_dir/known_hosts"
  for ((i = 1; i <= count; i++)); do
    host_paths "h$i"
    if ! wait_for 60 "dockerd of h$i" docker -H "unix://$hp_sock" version; then
      fail "hosts" "dockerd of h$i does not answer on unix://$hp_sock" "$LOG_DIR/dockerd-$h_id-h$i.log"
      return 1
    fi
    if ! wait_for 20 "ssh to h$i" ssh_ok "h$i.packfy.test" "docker version --format '{{.Server.Version}}'"; then
      fail "hosts" "the runner cannot reach h$i's dockerd over ssh (ssh -F $h_dir/ssh_config h$i.packfy.test docker version)" "$LOG_DIR/sshd-h$i.log"
      return 1
    fi
  done
  local fes=() bes=() fes2=() lb_sock lb_addr lb2_addr lb2_veth
  for name in lb lb2; do
    host_paths "$name"
    hosts_lb_haproxy_up "$lanes" "$name" || return 1
    wait_for 20 "ssh to $name" ssh_ok "$name.packfy.test" || {
      fail "hosts" "the runner cannot log in to $name.packfy.test" "$LOG_DIR/sshd-$name.log"
      return 1
    }
  done
  host_paths lb2
  lb2_addr="$hp_addr"
  lb2_veth="$hp_veth"
  host_paths lb
  lb_addr="$hp_addr"
  lb_sock="$(short_run_dir)/haproxy-$h_id-lb.sock"
  local pfes=()
  for ((i = 1; i <= lanes; i++)); do
    fes+=("$lb_addr:$((8000 + i))")
    fes2+=("$lb2_addr:$((8000 + i))")
    pfes+=("$lb_addr:$((8100 + i))")
    bes+=("hosts_t$i")
  done
  ((started)) && log "hosts: started namespaces (subnet 10.201.$h_subnet.0/24)"
  log "hosts: ${names[*]} (${addrs[*]}), lb.packfy.test ($lb_addr) and lb2.packfy.test ($lb2_addr) answer over ssh"
  state_set hosts "SUBNET=$h_subnet" \
    "PACKFY_SSH_CONFIG=$h_dir/ssh_config" \
    "PACKFY_SSH_KEY=$h_dir/id_ed25519" \
    "PACKFY_SSH_KNOWN_HOSTS=$h_dir/known_hosts" \
    "PACKFY_HOSTS=${names[*]}" \
    "PACKFY_HOSTS_ADDRS=${addrs[*]}" \
    "PACKFY_HOSTS_VETHS=$(for ((i = 1; i <= count; i++)); do host_paths "h$i"; printf '%s ' "$hp_veth"; done)" \
    "PACKFY_HOSTS_DOCKER_SOCKETS=$(for ((i = 1; i <= count; i++)); do host_paths "h$i"; printf 'unix://%s ' "$hp_sock"; done)" \
    "PACKFY_HOSTS_LB=lb.packfy.test" \
    "PACKFY_HOSTS_LB_SOCKET=$lb_sock" \
    "PACKFY_HOSTS_LB_FRONTENDS=${fes[*]}" \
    "PACKFY_HOSTS_LB_BACKENDS=${bes[*]}" \
    "PACKFY_HOSTS_LB_PREVIEW_FRONTENDS=${pfes[*]}" \
    "PACKFY_HOSTS_LB2=lb2.packfy.test" \
    "PACKFY_HOSTS_LB2_SOCKET=$h_lb_sock" \
    "PACKFY_HOSTS_LB2_FRONTENDS=${fes2[*]}" \
    "PACKFY_HOSTS_LB2_VETH=$lb2_veth"
}

hosts_down() {
  local f name
  hosts_vars
  stop_pidfile "$RUN_DIR/haproxy-$h_id-lb.pid" haproxy 10
  stop_pidfile "$RUN_DIR/haproxy-$h_id-lb2.pid" haproxy 10
  for f in "$RUN_DIR"/sshd-"$h_id"-*.pid "$RUN_DIR"/dockerd-"$h_id"-*.pid; do
    [[ -e "$f" ]] || continue
    name="${f##*-}"
    name="${name%.pid}"
    host_paths "$name"
    if pid_alive "$hp_dpid" dockerd; then
      local ids
      ids="$(docker -H "unix://$hp_sock" ps -aq 2>/dev/null || true)"
      # shellcheck disable=SC2086
      [[ -n "$ids" ]] && docker -H "unix://$hp_sock" rm -f $ids >/dev/null 2>&1 || true
      log "hosts: stopping $name"
    fi
    stop_pidfile "$hp_dpid" dockerd 30
    stop_pidfile "$hp_rpid" socat 5
    stop_pidfile "$hp_apid" socat 5
    stop_pidfile "$hp_spid" sshd 5
    host_wipe
  done
  for f in /run/netns/packfy-"$h_id"-*; do
    [[ -e "$f" ]] || continue
    name="${f##*/packfy-"$h_id"-}"
    [[ "$name" == root ]] && continue
    host_paths "$name"
    host_wipe
  done
  ip link del "$h_bridge" 2>/dev/null && log "hosts: removed bridge $h_bridge"
  ns_exists "$h_root_ns" && ip netns del "$h_root_ns"
  rm -f "$STATE_DIR/hosts.env"
}
