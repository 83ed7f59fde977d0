#!/usr/bin/env bash
# Rollback of the Fly apps by image: Fly has no rollback command, so the previous release's image
# is deployed again. Migrations are not undone, and need not be: they are expand-only within a
# release (test/unit/migrations-expand-only.test.ts), so the previous image runs against the new
# schema. The redeploy uses today's fly.*.toml and secrets.
#
#   scripts/fly-rollback.sh current APP                 # the image APP's machines run now
#   scripts/fly-rollback.sh previous APP                # the image of the release before that one
#   scripts/fly-rollback.sh deploy fly.X.toml APP IMAGE # deploy IMAGE (registry.fly.io/APP:deployment-<id>)
#
# .github/workflows/deploy.yml records `current` for each app before it deploys, and on a failed
# deploy or smoke test deploys the recorded images again: worker, then webhook, then api, the
# reverse of the deploy, so every mix of versions on the way back is one the deploy itself went
# through. By hand, after a bad release that already finished: `previous`, then `deploy`.
# `current` reads the machines, not the release list: a failed deploy that Fly undid (bluegreen)
# is the newest release, but its image is not what runs. Needs flyctl and node on PATH, and
# FLY_API_TOKEN (or a `fly auth login` session).
set -euo pipefail
shopt -s inherit_errexit  # a failure inside $(...) stops the script too

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

# The image most of APP's machines run (config.image of `fly machines list --json`); nothing for
# an app without machines. Mid-deploy (a rolling deploy stopped halfway) the majority wins.
running() {
  local listing
  listing="$(flyctl machines list -a "$1" --json)"
  node -e '
    const machines = JSON.parse(require("fs").readFileSync(0, "utf8")) ?? [];
    const counts = new Map();
    for (const m of machines) {
      const image = m?.config?.image;
      if (typeof image === "string" && m.state !== "destroyed") counts.set(image, (counts.get(image) ?? 0) + 1);
    }
    const [best] = [...counts].sort((a, b) => b[1] - a[1]);
    if (best) console.log(best[0]);
  ' <<<"$listing"
}

case "${1:-}" in
  current)
    [ $# -eq 2 ] || usage
    running "$2"
    ;;
  previous)
    [ $# -eq 2 ] || usage
    # The newest image released before the one running now, skipping releases that kept its
    # image (secrets, scale) and any newer ones (failed deploys that Fly undid).
    now="$(running "$2")"
    [ -n "$now" ] || { echo "fly-rollback: $2 has no machines: nothing runs to roll back from" >&2; exit 1; }
    list="$(images "$2")"
    # From the running image's newest release on, when it is in the list.
    if grep -q -x -F "$now" <<<"$list"; then
      list="$(awk -v now="$now" 'seen || $0 == now { seen = 1; print }' <<<"$list")"
    fi
    before="$(grep -v -x -F "$now" <<<"$list" | head -n 1 || true)"
    [ -n "$before" ] || { echo "fly-rollback: no earlier image of $2 among its last 25 releases (it runs $now)" >&2; exit 1; }
    echo "$before"
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
