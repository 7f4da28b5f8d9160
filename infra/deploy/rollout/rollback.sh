#!/usr/bin/env bash
# Roll the web service back to its previous version (docs/runbooks/rollback.md).
#
#   infra/deploy/rollout/rollback.sh [-n NAMESPACE] [-r RELEASE] [--to-revision N]
#                                    [--skip-analysis] [--timeout 10m]
#
# Steps: abort the rollout in progress (blue-green: the active Service stays on, or
# returns to, the stable pods), undo to the previous (or given) revision, promote it, wait
# until it is Healthy, and print the status. Exits non-zero if it is not Healthy in time.
# Needs kubectl with the Argo Rollouts plugin (kubectl argo rollouts).
set -euo pipefail

namespace=spacemusic
release=sm
revision=""
full=""
timeout=10m

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
  case $1 in
    -n|--namespace) namespace=$2; shift 2 ;;
    -r|--release) release=$2; shift 2 ;;
    --to-revision) revision=$2; shift 2 ;;
    # Promote without the SLO analysis: for when the metrics themselves are broken.
    --skip-analysis) full=--full; shift ;;
    --timeout) timeout=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "rollback: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done

rollout="$release-spacemusic-web"
ar() { kubectl argo rollouts --namespace "$namespace" "$@"; }
say() { printf 'rollback: %s\n' "$*" >&2; }

if ! kubectl argo rollouts version >/dev/null 2>&1; then
  say "kubectl argo rollouts is not available (install the Argo Rollouts kubectl plugin)"
  exit 3
fi

say "aborting any update of $namespace/$rollout"
ar abort "$rollout"

say "undoing to ${revision:+revision $revision}${revision:-the previous revision}"
ar undo "$rollout" ${revision:+--to-revision "$revision"}

say "promoting${full:+ (skipping analysis)}"
ar promote "$rollout" ${full:+"$full"}

say "waiting up to $timeout for Healthy"
if ! ar status "$rollout" --timeout "$timeout"; then
  say "$rollout is not Healthy after $timeout; current state follows"
  ar get rollout "$rollout" --no-color || true
  exit 1
fi
ar get rollout "$rollout" --no-color
say "done: $rollout is Healthy on the rolled-back revision"
