#!/usr/bin/env bash
# Builds (once) the real kube-apiserver and etcd that tests/kube/ runs, from the Go module proxy, and
# caches them outside the repository, keyed by version:
#   ~/.cache/traffic-guard/kube/<kube version>/kube-apiserver
#   ~/.cache/traffic-guard/etcd/<etcd version>/etcd
# A second run finds both binaries and returns at once, so only a fresh machine pays the build.
# Prints the two absolute paths, one per line, on stdout (progress goes to stderr).
# With --check it never builds: it prints the paths and exits 0 when both are cached, else exits 3.
#
# Environment: KUBE_VERSION (default v1.37.2), ETCD_VERSION (default v3.7.3, see below),
# TRAFFIC_GUARD_CACHE (default ~/.cache/traffic-guard), GO (default: go on PATH or /usr/local/go/bin/go).
set -euo pipefail

CHECK_ONLY=0
case "${1:-}" in
  --check) CHECK_ONLY=1 ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

KUBE_VERSION="${KUBE_VERSION:-v1.37.2}"
# Kubernetes v1.37.2 ships etcd 3.7.0 (build/dependencies.yaml) and kubeadm requires at least 3.5.24 for an
# external etcd; Debian's etcd-server 3.4.23 is older than that (kube-apiserver still starts on it, but logs
# "RequestWatchProgress feature is not supported" and disables consistent reads from its watch cache), so etcd is
# built from the go.etcd.io/etcd/server/v3 module too: the same minor as Kubernetes, latest patch.
ETCD_VERSION="${ETCD_VERSION:-v3.7.3}"
CACHE="${TRAFFIC_GUARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/traffic-guard}"
if [ -z "${GO:-}" ]; then
  if command -v go >/dev/null 2>&1; then GO="$(command -v go)"; else GO=/usr/local/go/bin/go; fi
fi

log() { echo "kube-bins: $*" >&2; }

# The staging modules of k8s.io/kubernetes are required at v0.0.0 and replaced by ./staging/src/... in its
# own go.mod; those replaces do not apply to a dependent module, so pin each one to the published
# k8s.io/<name> v0.<minor>.<patch> that was cut from the same release.
STAGING_VERSION="v0.${KUBE_VERSION#v1.}"

KUBE_DIR="$CACHE/kube/$KUBE_VERSION"
ETCD_DIR="$CACHE/etcd/$ETCD_VERSION"
APISERVER="$KUBE_DIR/kube-apiserver"
ETCD="$ETCD_DIR/etcd"

# A cached binary counts only if it runs and reports the expected version (a half-written file does not).
# The output is captured first: grep -q exiting early would SIGPIPE the binary and fail the pipeline.
etcd_cached() {
  [ -x "$ETCD" ] || return 1
  local out; out="$("$ETCD" --version 2>/dev/null)" || return 1
  grep -qx "etcd Version: ${ETCD_VERSION#v}" <<<"$out"
}
apiserver_cached() {
  [ -x "$APISERVER" ] || return 1
  local out; out="$("$APISERVER" --version 2>/dev/null)" || return 1
  grep -qx "Kubernetes $KUBE_VERSION" <<<"$out"
}

if [ "$CHECK_ONLY" = 1 ]; then
  if etcd_cached && apiserver_cached; then echo "$APISERVER"; echo "$ETCD"; exit 0; fi
  etcd_cached || log "etcd $ETCD_VERSION is not built ($ETCD)"
  apiserver_cached || log "kube-apiserver $KUBE_VERSION is not built ($APISERVER)"
  exit 3
fi

[ -x "$GO" ] || { log "no Go toolchain at $GO (set GO=/path/to/go)"; exit 1; }
mkdir -p "$KUBE_DIR" "$ETCD_DIR"
# Serialise concurrent callers (CI setup and a test's before() hook) on one lock per cache.
exec 9>"$CACHE/.build.lock"
flock 9

export GOFLAGS="${GOFLAGS:-} -mod=mod"
export CGO_ENABLED=0
export GOTOOLCHAIN=local

build_apiserver() {
  local src="$KUBE_DIR/src"
  rm -rf "$src"; mkdir -p "$src"
  log "building kube-apiserver $KUBE_VERSION (staging modules at $STAGING_VERSION) in $src"
  # The upstream go.mod lists which staging modules exist at this release.
  local upstream_mod
  upstream_mod="$(cd "$src" && "$GO" mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')"
  [ -f "$upstream_mod" ] || { log "could not download k8s.io/kubernetes@$KUBE_VERSION"; return 1; }
  local go_directive
  go_directive="$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$upstream_mod" | head -1)"
  {
    echo "module traffic-guard.local/kube-apiserver-build"
    echo
    echo "go $go_directive"
    echo
    # kube-apiserver is built by Kubernetes with this GODEBUG default; keep its runtime behaviour.
    sed -n 's/^godebug /godebug /p' "$upstream_mod"
    echo
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo
    echo "replace ("
    sed -n 's#^[[:space:]]*\(k8s\.io/[a-z0-9-]*\) => \./staging/src/.*#\1#p' "$upstream_mod" | while read -r m; do
      # Only modules the release actually requires; sample-* modules are never published.
      if grep -qE "^[[:space:]]+$m v0\.0\.0( |\$)" "$upstream_mod"; then echo "	$m => $m $STAGING_VERSION"; fi
    done
    echo ")"
  } > "$src/go.mod"
  local minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
  local pkg=k8s.io/component-base/version
  local ldflags="-s -w -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  (cd "$src" && "$GO" build -trimpath -ldflags "$ldflags" -o "$APISERVER.tmp" k8s.io/kubernetes/cmd/kube-apiserver)
  mv -f "$APISERVER.tmp" "$APISERVER"
  rm -rf "$src"
}

build_etcd() {
  local src="$ETCD_DIR/src"
  rm -rf "$src"; mkdir -p "$src"
  log "building etcd $ETCD_VERSION in $src"
  printf 'module traffic-guard.local/etcd-build\n\ngo 1.24\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" > "$src/go.mod"
  (cd "$src" && "$GO" build -trimpath -ldflags "-s -w" -o "$ETCD.tmp" go.etcd.io/etcd/server/v3)
  mv -f "$ETCD.tmp" "$ETCD"
  rm -rf "$src"
}

if etcd_cached; then
  log "etcd $ETCD_VERSION cached at $ETCD"
else
  build_etcd
fi
if apiserver_cached; then
  log "kube-apiserver $KUBE_VERSION cached at $APISERVER"
else
  build_apiserver
fi

echo "$APISERVER"
echo "$ETCD"
