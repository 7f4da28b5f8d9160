#!/usr/bin/env bash
# Run web + worker + a simulator under honcho, after `make setup` prepared the stack.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.venv/bin:$PATH"
web="http://${WEB_HOST:-127.0.0.1}:${WEB_PORT:-8080}"
cat <<BANNER

  SpaceMusic is starting (web, worker, simulated offers). Where to look:
    admin page        $web/admin          (dev login: $web/dev-idp/login)
    deals (JSON)      $web/deals
    live SSE stream   curl -N -H "Authorization: Bearer \$(spacemusic dev-token --permission deals:read)" $web/offers/events/deals
    metrics           curl -H "Authorization: Bearer \$(spacemusic dev-token --permission metrics:read)" $web/metrics
    readiness         $web/readyz
    stack             make stack-status   (logs in .local/logs/)
  Ctrl-C stops web and workers; the stack keeps running (make stack-down stops it).

BANNER
exec honcho -f infra/local/Procfile.dev -d . start
