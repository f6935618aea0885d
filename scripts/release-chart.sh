#!/usr/bin/env bash
# Package the chart for a release: scripts/release-chart.sh TAG ROUTER_REPOSITORY OUT_DIR
#
#   TAG                the git tag being released, v<version>; it must equal the chart's version
#                      and appVersion (the router image is tagged with appVersion).
#   ROUTER_REPOSITORY  where the release publishes the router image (ghcr.io/<owner>/pdstack-router);
#                      it becomes the packaged chart's routerSpec.repository, so installs of a
#                      released chart need not name the image (the source tree's chart still does).
#   OUT_DIR            where pdstack-<version>.tgz is written.
#
# The packaged chart is linted and rendered with values/values-pd.yaml and no router image set
# before it is written. .github/workflows/release.yaml runs this, then `helm push`es the file.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TAG=${1:?usage: release-chart.sh TAG ROUTER_REPOSITORY OUT_DIR}
REPOSITORY=${2:?usage: release-chart.sh TAG ROUTER_REPOSITORY OUT_DIR}
OUT=${3:?usage: release-chart.sh TAG ROUTER_REPOSITORY OUT_DIR}
HELM=${HELM:-$ROOT/.tools/bin/helm}
export HELM_PLUGINS="$ROOT/.tools/helm/plugins" HELM_DATA_HOME="$ROOT/.tools/helm/data"
export HELM_CONFIG_HOME="$ROOT/.tools/helm/config" HELM_CACHE_HOME="$ROOT/.tools/helm/cache"

field() { sed -n "s/^$1: *\"\{0,1\}\([^\"]*\)\"\{0,1\} *\$/\1/p" "$ROOT/charts/pdstack/Chart.yaml"; }
VERSION=$(field version)
APP_VERSION=$(field appVersion)
if [[ "$TAG" != "v$VERSION" || "$APP_VERSION" != "$VERSION" ]]; then
  echo "release-chart: tag $TAG must be v<chart version>, and appVersion must equal version" \
    "(Chart.yaml: version $VERSION, appVersion $APP_VERSION)" >&2
  exit 1
fi
if [[ ! "$REPOSITORY" =~ ^[a-z0-9]([a-z0-9._/-]*[a-z0-9])?(:[0-9]+)?(/[a-z0-9._-]+)*$ ]]; then
  echo "release-chart: $REPOSITORY is not an image repository" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$ROOT/charts/pdstack" "$work/pdstack"
# routerSpec.repository is the only two-space-indented `repository: ""` in values.yaml.
values="$work/pdstack/values.yaml"
if [[ $(grep -c '^  repository: ""$' "$values") != 1 ]]; then
  echo "release-chart: cannot find routerSpec.repository in values.yaml" >&2
  exit 1
fi
sed -i "s|^  repository: \"\"\$|  repository: $REPOSITORY|" "$values"

"$HELM" lint --strict "$work/pdstack" -f "$ROOT/values/values-pd.yaml" >/dev/null
image=$("$HELM" template vllm "$work/pdstack" -f "$ROOT/values/values-pd.yaml" \
  --show-only templates/deployment-router.yaml | sed -n 's/^ *image: //p')
if [[ "$image" != "$REPOSITORY:$APP_VERSION" ]]; then
  echo "release-chart: the packaged chart's router image is '$image', not $REPOSITORY:$APP_VERSION" >&2
  exit 1
fi
mkdir -p "$OUT"
"$HELM" package "$work/pdstack" --destination "$OUT"
