#!/usr/bin/env bash
# Rollback of the Fly apps by image: Fly has no rollback command, so the previous release's image
# is deployed again. Migrations are not undone, and need not be: they are expand-only within a
# release (test/unit/migrations-expand-only.test.ts), so the previous image runs against the new
# schema. The redeploy uses today's fly.*.toml and secrets.
#
#   scripts/fly-rollback.sh current APP                 # the image APP runs now (its newest release)
#   scripts/fly-rollback.sh previous APP                # the image of the release before that
#   scripts/fly-rollback.sh deploy fly.X.toml APP IMAGE # deploy IMAGE (registry.fly.io/APP:deployment-<id>)
#
# .github/workflows/deploy.yml records `current` for each app before it deploys, and on a failed
# deploy or smoke test deploys the recorded images again: worker, then webhook, then api, the
# reverse of the deploy, so every mix of versions on the way back is one the deploy itself went
# through. By hand, after a bad release that already finished: `previous`, then `deploy`.
# Needs flyctl on PATH and FLY_API_TOKEN (or a `fly auth login` session).
set -euo pipefail

usage() {
  sed -n '7,9p' "$0" | sed 's/^# *//' >&2
  exit 2
}

# The image references of APP's releases, newest first (`fly releases --image` lists the last 25).
# A flyctl failure (auth, network) stops the script; an app with no release yet lists none.
images() {
  local listing
  listing="$(flyctl releases -a "$1" --image)"
  grep -o 'registry\.fly\.io/[^[:space:]]*' <<<"$listing" || true
}

case "${1:-}" in
  current)
    [ $# -eq 2 ] || usage
    images "$2" | head -n 1
    ;;
  previous)
    [ $# -eq 2 ] || usage
    # The newest image that differs from the one running now (a release that only changed
    # secrets or scale keeps its image).
    now="$(images "$2" | head -n 1)"
    images "$2" | grep -v -x -F "${now:-none}" | head -n 1
    ;;
  deploy)
    [ $# -eq 4 ] || usage
    config="$2" app="$3" image="$4"
    if [ -z "$image" ]; then
      echo "fly-rollback: no previous image recorded for $app (its first deploy?); nothing to roll back to" >&2
      exit 0
    fi
    case "$image" in
      registry.fly.io/*) ;;
      *) echo "fly-rollback: $image is not a registry.fly.io image" >&2; exit 2 ;;
    esac
    echo "fly-rollback: deploying $image to $app with $config" >&2
    flyctl deploy -c "$config" -a "$app" --image "$image"
    ;;
  *)
    usage
    ;;
esac
