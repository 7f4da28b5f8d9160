#!/usr/bin/env bash
# Installs the local OIDC provider's one dependency (oidc-provider from the npm registry) into
# infra/local/oidc/node_modules. Idempotent: quick when the pinned version is already there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
want=$(node -p 'require("./package.json").dependencies["oidc-provider"]')
have=$(node -p 'try { require("./node_modules/oidc-provider/package.json").version } catch { "" }' 2>/dev/null || true)
if [[ "$have" == "$want" ]]; then
  exit 0
fi
if [[ -f package-lock.json ]]; then
  npm ci --no-audit --no-fund --loglevel=error
else
  npm install --no-audit --no-fund --loglevel=error
fi
