#!/usr/bin/env bash
# Builds the test cluster's binaries from Go modules (no release downloads, no images):
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl   k8s.io/kubernetes
#   etcd                                       go.etcd.io/etcd/server/v3 (cmd/etcd here)
#   kwok, kwokctl                              sigs.k8s.io/kwok (its own module: kwok/)
# into $PACKFY_CACHE/k8s/<k8s-version>-<kwok-version>/bin (default ~/.cache/packfy), outside
# the repository. A no-op when that directory is complete and was built from the same
# go.mod/go.sum/sources/flags (a stamp holds their hash). Prints the bin directory on stdout.
#
# Environment: PACKFY_CACHE, PACKFY_GO_PARALLEL (go build -p, default 2), CI=true (a
# failure says why and exits 1 - it does anyway; CI only changes nothing here).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v go >/dev/null 2>&1 || k8s_fail "cannot build the Kubernetes binaries: no Go toolchain (go) on PATH"
command -v flock >/dev/null 2>&1 || k8s_fail "flock (util-linux) is missing"
[[ -n "$K8S_VERSION" && -n "$KWOK_VERSION" && -n "$ETCD_VERSION" ]] ||
  k8s_fail "cannot read versions from $K8S_DIR/go.mod and $K8S_DIR/kwok/go.mod"

k8s_minor="${K8S_VERSION#v}" k8s_minor="${k8s_minor#*.}" k8s_minor="${k8s_minor%%.*}"
k8s_major="${K8S_VERSION#v}" k8s_major="${k8s_major%%.*}"
# What hack/lib/version.sh stamps into a release, so /version and `kubectl version` report
# the real version instead of v0.0.0-master.
version_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  version_ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$k8s_major"
  version_ldflags+=" -X $pkg.gitMinor=$k8s_minor -X $pkg.gitTreeState=clean"
done
ldflags="-s -w$version_ldflags"

# The inputs of the build; a change to any of them rebuilds.
stamp="$(
  {
    go version
    echo "$ldflags"
    cat "$K8S_DIR/go.mod" "$K8S_DIR/go.sum" "$K8S_DIR/kwok/go.mod" "$K8S_DIR/kwok/go.sum" \
      "$K8S_DIR/cmd/etcd/main.go"
  } | sha256sum | cut -c1-16
)"

complete() {
  [[ "$(cat "$K8S_CACHE_DIR/stamp" 2>/dev/null)" == "$stamp" ]] || return 1
  local b
  for b in "${K8S_BINARIES[@]}"; do [[ -x "$K8S_BIN_DIR/$b" ]] || return 1; done
}

if complete; then
  k8s_log "binaries up to date in $K8S_BIN_DIR"
  echo "$K8S_BIN_DIR"
  exit 0
fi

mkdir -p "$K8S_CACHE_DIR"
# One build at a time per cache directory (two checkouts or make targets at once).
exec 9>"$K8S_CACHE_DIR/.lock"
flock 9
if complete; then
  echo "$K8S_BIN_DIR"
  exit 0
fi

log="$K8S_CACHE_DIR/build.log"
tmp="$K8S_CACHE_DIR/bin.tmp"
rm -rf "$tmp"
mkdir -p "$tmp"
: >"$log"
started=$SECONDS
k8s_log "building Kubernetes $K8S_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION into $K8S_BIN_DIR (a cold build takes 10-25 min on 2 cores; log $log)"

# -mod=readonly: go.mod/go.sum are committed complete; a build never rewrites them.
# nice: the build uses -p cores (2 by default) but yields to whatever else is running.
export GOFLAGS="-mod=readonly -buildvcs=false -trimpath" CGO_ENABLED=0 GOTOOLCHAIN=local
par="${PACKFY_GO_PARALLEL:-2}"
gobuild() { (cd "$1" && shift && nice -n 10 go build -p "$par" -ldflags="$ldflags" "$@") >>"$log" 2>&1; }

gobuild "$K8S_DIR" -o "$tmp/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kubectl ||
  k8s_fail "go build of Kubernetes $K8S_VERSION failed" "$log"
k8s_log "kube-* and kubectl built ($((SECONDS - started))s)"
gobuild "$K8S_DIR" -o "$tmp/etcd" ./cmd/etcd || k8s_fail "go build of etcd $ETCD_VERSION failed" "$log"
k8s_log "etcd built ($((SECONDS - started))s)"
gobuild "$K8S_DIR/kwok" -o "$tmp/" sigs.k8s.io/kwok/cmd/kwok sigs.k8s.io/kwok/cmd/kwokctl ||
  k8s_fail "go build of kwok $KWOK_VERSION failed" "$log"

for b in "${K8S_BINARIES[@]}"; do
  [[ -x "$tmp/$b" ]] || k8s_fail "go build left no $b" "$log"
done
rm -rf "$K8S_BIN_DIR"
mv "$tmp" "$K8S_BIN_DIR"
printf 'K8S_VERSION=%s\nETCD_VERSION=%s\nKWOK_VERSION=%s\n' "$K8S_VERSION" "$ETCD_VERSION" "$KWOK_VERSION" \
  >"$K8S_CACHE_DIR/versions.env"
echo "$stamp" >"$K8S_CACHE_DIR/stamp"
k8s_log "built in $((SECONDS - started))s: $K8S_BIN_DIR"
echo "$K8S_BIN_DIR"
