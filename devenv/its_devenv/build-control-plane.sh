#!/usr/bin/env bash
# Builds the local control plane's binaries from Go modules with the machine's Go
# toolchain, caching them outside the work tree keyed by version, so that a second
# run (or CI on the same machine) takes seconds.
#
# Why wrapper modules: k8s.io/kubernetes maps every k8s.io/<staging> module to
# ./staging/... with replace directives, and etcd's server module does the same, so
# `go install pkg@version` refuses them. A throwaway module that requires the real
# module and replaces each staging module with its published v0.Y.Z sibling builds.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
CACHE_ROOT="${ITS_CACHE_DIR:-$HOME/.cache/its-analytics}"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
export CGO_ENABLED=0

log() { printf '[build-control-plane] %s\n' "$*" >&2; }

build_k8s() {
  local out="$CACHE_ROOT/k8s/$K8S_VERSION/bin"
  local want=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
  local missing=()
  for b in "${want[@]}"; do [ -x "$out/$b" ] || missing+=("$b"); done
  if [ ${#missing[@]} -eq 0 ]; then log "kubernetes $K8S_VERSION cached in $out"; return; fi
  log "building kubernetes $K8S_VERSION: ${missing[*]} (first time: many minutes)"
  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local staging_version="v0.${K8S_VERSION#v1.}"
  local wrap="$CACHE_ROOT/k8s/$K8S_VERSION/wrapper"
  mkdir -p "$wrap" "$out"
  local gomod
  gomod=$(cd "$wrap" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  local godebug
  godebug=$(grep -E '^godebug ' "$gomod" || true)
  {
    echo "module its.local/k8s-wrapper"
    echo
    grep -E '^go [0-9]' "$gomod" | head -1
    [ -n "$godebug" ] && echo "$godebug"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    grep -oE 'k8s.io/[a-z0-9-]+ => ./staging/src/k8s.io/[a-z0-9-]+' "$gomod" | awk '{print $1}' | sort -u |
      while read -r m; do echo "replace $m => $m $staging_version"; done
  } > "$wrap/go.mod"
  cat > "$wrap/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubectl/pkg/cmd"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  (cd "$wrap" && go mod tidy -e >/dev/null 2>&1 || true)
  (cd "$wrap" && go mod download)
  local ld="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitTreeState=clean"
  for b in "${missing[@]}"; do
    log "go build $b"
    (cd "$wrap" && go build -tags tools -trimpath -ldflags "$ld" -o "$out/$b.tmp" "k8s.io/kubernetes/cmd/$b") && mv "$out/$b.tmp" "$out/$b"
  done
}

build_etcd() {
  local out="$CACHE_ROOT/etcd/$ETCD_VERSION/bin"
  if [ -x "$out/etcd" ]; then log "etcd $ETCD_VERSION cached"; return; fi
  log "building etcd $ETCD_VERSION"
  local wrap="$CACHE_ROOT/etcd/$ETCD_VERSION/wrapper"
  mkdir -p "$wrap" "$out"
  cat > "$wrap/go.mod" <<MOD
module its.local/etcd-wrapper

go 1.24

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
MOD
  cat > "$wrap/tools.go" <<'GO'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
  (cd "$wrap" && go mod tidy -e >/dev/null 2>&1 || true)
  (cd "$wrap" && go build -tags tools -trimpath -ldflags "-s -w" -o "$out/etcd.tmp" go.etcd.io/etcd/server/v3) && mv "$out/etcd.tmp" "$out/etcd"
}

build_kwok() {
  local out="$CACHE_ROOT/kwok/$KWOK_VERSION/bin"
  if [ -x "$out/kwok" ]; then log "kwok $KWOK_VERSION cached"; return; fi
  log "building kwok $KWOK_VERSION"
  mkdir -p "$out"
  GOBIN="$out" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
}

case "${1:-all}" in
  all) build_etcd; build_kwok; build_k8s ;;
  etcd) build_etcd ;;
  kwok) build_kwok ;;
  k8s) build_k8s ;;
  print-bindir)
    echo "$CACHE_ROOT/k8s/$K8S_VERSION/bin:$CACHE_ROOT/etcd/$ETCD_VERSION/bin:$CACHE_ROOT/kwok/$KWOK_VERSION/bin" ;;
  *) echo "usage: $0 [all|etcd|kwok|k8s|print-bindir]" >&2; exit 2 ;;
esac
