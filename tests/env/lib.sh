# shellcheck shell=bash
# Shared by the test-environment scripts in tests/env/: paths, logging, failing, package
# installs, pidfiles, ports and waiting. Source it; it defines functions and variables only.
#
# Everything the environment creates lives under $ENV_DIR (target/test-env of the repo the
# scripts belong to), so several checkouts do not share state and `make env-down` knows
# exactly what it started: a process is ours only if its pidfile is under $ENV_DIR.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ENV_DIR="$ROOT/target/test-env"
LOG_DIR="$ENV_DIR/logs"
RUN_DIR="$ENV_DIR/run"      # pidfiles and sockets
STATE_DIR="$ENV_DIR/state"  # one KEY=VALUE file per part, read back into env.sh
ENV_FILE="$ENV_DIR/env.sh"
SAMPLE_DIR="$ROOT/tests/sample-app"
SAMPLE_TARGET_DIR="$SAMPLE_DIR/target"
SAMPLE_BIN="$SAMPLE_TARGET_DIR/x86_64-unknown-linux-gnu/release/packfy-sample"

mkdir -p "$LOG_DIR" "$RUN_DIR" "$STATE_DIR"

log() { printf '[test-env] %s\n' "$*" >&2; }

# Under CI: CI set to anything but empty, false or 0 (as tests/support's is_ci).
is_ci() { [[ -n "${CI:-}" && "${CI,,}" != "false" && "$CI" != "0" ]]; }

# fail PART REASON [LOGFILE]: a part did not come up. Under CI=true this ends the script
# (exit 1); otherwise it warns and returns 1 so the caller can carry on without that part.
fail() {
  local part="$1" reason="$2" logfile="${3:-}"
  {
    printf '[test-env] ERROR: %s failed to start: %s\n' "$part" "$reason"
    if [[ -n "$logfile" && -s "$logfile" ]]; then
      printf '[test-env] last lines of %s:\n' "$logfile"
      tail -n 20 "$logfile" | sed 's/^/    /'
    fi
  } >&2
  if is_ci; then
    exit 1
  fi
  log "WARNING: carrying on without $part (under CI=true this fails env-up)"
  return 1
}

# ensure_packages CMD:PKG ...: installs with apt the packages whose command (or, when CMD is
# empty, whose dpkg status) is missing. apt-get update runs once, only if something is missing.
# Services that packages would start are held back (policy-rc.d): we start our own.
ensure_packages() {
  local missing=() spec cmd pkg
  for spec in "$@"; do
    cmd="${spec%%:*}" pkg="${spec#*:}"
    if [[ -n "$cmd" ]]; then
      command -v "$cmd" >/dev/null 2>&1 || [[ -x "/usr/sbin/$cmd" || -x "/sbin/$cmd" ]] || missing+=("$pkg")
    else
      [[ "$(dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null)" == "install ok installed" ]] || missing+=("$pkg")
    fi
  done
  ((${#missing[@]})) || return 0
  # shellcheck disable=SC2207
  missing=($(printf '%s\n' "${missing[@]}" | sort -u))
  if [[ "$(id -u)" != 0 ]]; then
    fail "packages" "missing ${missing[*]} and not root, cannot apt-get install"
    return 1
  fi
  log "installing with apt: ${missing[*]}"
  local apt_log="$LOG_DIR/apt.log" own_policy=""
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    own_policy=1
  fi
  local rc=0
  {
    apt-get update -q &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"
  } >>"$apt_log" 2>&1 || rc=$?
  [[ -n "$own_policy" ]] && rm -f /usr/sbin/policy-rc.d
  if ((rc)); then
    fail "packages" "apt-get install ${missing[*]} exited $rc" "$apt_log"
    return 1
  fi
}

# pid_alive PIDFILE [NAME]: the pidfile names a live process (whose command is NAME, when given).
pid_alive() {
  local pidfile="$1" name="${2:-}" pid
  [[ -s "$pidfile" ]] || return 1
  pid="$(head -n1 "$pidfile" | tr -dc '0-9')"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
  # An exited child not yet reaped (a zombie) is not alive.
  [[ "$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null)" != Z ]] || return 1
  if [[ -n "$name" ]]; then
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -- "$name" >/dev/null || return 1
  fi
}

# stop_pidfile PIDFILE NAME [SECONDS]: SIGTERM the process, SIGKILL it after SECONDS (20).
stop_pidfile() {
  local pidfile="$1" name="$2" secs="${3:-20}" pid i
  if pid_alive "$pidfile" "$name"; then
    pid="$(head -n1 "$pidfile" | tr -dc '0-9')"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < secs * 10; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name (pid $pid) did not stop in ${secs}s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.2
    fi
  fi
  rm -f "$pidfile"
}

# port_in_use PORT: something listens on 127.0.0.1:PORT.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port PREFERRED: PREFERRED if free, else the next free port above it.
free_port() {
  local p="$1"
  while port_in_use "$p"; do p=$((p + 1)); done
  echo "$p"
}

# wait_for SECONDS DESCRIPTION CMD...: runs CMD every 0.2 s until it succeeds.
wait_for() {
  local secs="$1" what="$2" i
  shift 2
  for ((i = 0; i < secs * 5; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  log "timed out after ${secs}s waiting for $what"
  return 1
}

# wait_alive SECONDS DESCRIPTION PIDFILE CMD...: like wait_for, but gives up as soon as
# the process PIDFILE names has exited (no point waiting for a program that died).
wait_alive() {
  local secs="$1" what="$2" pidfile="$3" i
  shift 3
  for ((i = 0; i < secs * 5; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    if ((i > 2)) && ! pid_alive "$pidfile"; then
      log "$what: the process exited"
      return 1
    fi
    sleep 0.2
  done
  log "timed out after ${secs}s waiting for $what"
  return 1
}

# http_ok URL: a 2xx answer.
http_ok() { curl -fsS -o /dev/null --max-time 2 "$1"; }

# state_set PART KEY=VALUE...: records what a part exports (read by write_env_file).
state_set() {
  local part="$1"
  shift
  printf '%s\n' "$@" >"$STATE_DIR/$part.env.tmp"
  mv "$STATE_DIR/$part.env.tmp" "$STATE_DIR/$part.env"
}

# state_get PART KEY: a value recorded by state_set, or nothing.
state_get() {
  [[ -f "$STATE_DIR/$1.env" ]] || return 0
  sed -n "s/^$2=//p" "$STATE_DIR/$1.env" | tail -n1
}

# Unix socket paths are limited to 107 bytes and dockerd nests containerd's sockets deep in
# its exec root. In a checkout with a long path, sockets and exec roots move to a short
# directory under /run named after the checkout.
short_run_dir() {
  if ((${#ENV_DIR} <= 48)); then
    echo "$RUN_DIR"
  else
    local d
    d="/run/packfy-test-env-$(printf '%s' "$ENV_DIR" | cksum | cut -d' ' -f1)"
    mkdir -p "$d"
    ln -sfn "$d" "$ENV_DIR/short-run" 2>/dev/null || true
    echo "$d"
  fi
}

# count_knob VAR DEFAULT MAX: the value of the count variable VAR (DEFAULT when unset), which
# must be 1..MAX (a single digit); anything else ends the script.
count_knob() {
  local n="${!1:-$2}"
  [[ "$n" =~ ^[1-9]$ ]] && ((n <= $3)) || {
    log "$1 must be 1..$3, got '$n'"
    exit 2
  }
  echo "$n"
}

# Number of private Docker daemons (regions' hosts) to run.
dockerd_count() { count_knob PACKFY_DOCKERD_COUNT 3 9; }

# spawn PIDFILE LOGFILE CMD...: starts CMD in its own session (so a Ctrl-C in make does not
# reach it), output appended to LOGFILE, its pid written to PIDFILE (unless PIDFILE is "-",
# for programs that write their own).
spawn() {
  local pidfile="$1" logfile="$2"
  shift 2
  printf '\n==== %s: %s\n' "$(date -u +%FT%TZ)" "$*" >>"$logfile"
  if [[ "$pidfile" == "-" ]]; then
    setsid "$@" >>"$logfile" 2>&1 </dev/null &
  else
    # shellcheck disable=SC2016
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" >>"$logfile" 2>&1 </dev/null &
  fi
}
