#!/usr/bin/env bash
# Builds the CPU and GPU images daemonless with buildah (no Docker engine, no registry needed), then
# prints their sizes and build times.
#
#   bash scripts/image.sh [base|cpu|gpu|sizes|env ...]     (default: base cpu gpu sizes; as root)
#
# Without a reachable registry the base image is a local Debian 12 + Python 3.11 root filesystem made
# with debootstrap (built once, then reused). Storage and settings live under $VOICENAV_CTR_ROOT so
# nothing system-wide changes; `eval "$(bash scripts/image.sh env)"` sets them for podman/buildah by hand.
#
# Environment: VOICENAV_CTR_ROOT (default /var/tmp/voicenav-ctr), VOICENAV_CTR_DRIVER (overlay or vfs), BASE (default: the local base image),
# MODEL (tiny.en or base), TAG (default dev), WHEELS (dir with the torch CPU wheel, default /opt/wheels),
# CA_BUNDLE (extra CA for pip behind a TLS-inspecting proxy; default: the host's extra CAs, if any).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CTR=${VOICENAV_CTR_ROOT:-/var/tmp/voicenav-ctr}
LOCAL_BASE=localhost/debian-python:12-bookworm
MODEL=${MODEL:-tiny.en}
TAG=${TAG:-dev}
WHEELS=${WHEELS:-/opt/wheels}
CPU_IMAGE=localhost/voicenav:$TAG
GPU_IMAGE=localhost/voicenav:$TAG-gpu
log() { echo "[image] $*" >&2; }

ctr_env() {
  # overlay (native, on ext4/xfs) shares layers; vfs copies every layer and container in full but works on
  # any filesystem: VOICENAV_CTR_DRIVER=vfs where overlay is refused. Each driver has its own store.
  local driver=${VOICENAV_CTR_DRIVER:-overlay}
  mkdir -p "$CTR"
  printf '[storage]\ndriver = "%s"\nrunroot = "%s/run-%s"\ngraphroot = "%s/storage-%s"\n' \
    "$driver" "$CTR" "$driver" "$CTR" "$driver" >"$CTR/storage.conf"
  # runc: crun rejects this host's hybrid cgroups; explicit rlimits: podman's defaults need a capability
  # root lacks in an unprivileged VM.
  printf '%s\n' '[containers]' 'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]' '[engine]' \
    'runtime = "runc"' >"$CTR/containers.conf"
  export CONTAINERS_STORAGE_CONF=$CTR/storage.conf CONTAINERS_CONF=$CTR/containers.conf
  export BUILDAH_ISOLATION=chroot STORAGE_DRIVER=$driver
}

# A stand-in for python:3.11-slim-bookworm from the Debian mirror apt already uses.
build_base() {
  if podman image exists "$LOCAL_BASE"; then
    log "$LOCAL_BASE exists, reusing it"
    return
  fi
  local mirror rootfs=$CTR/rootfs
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  rm -rf --one-file-system "$rootfs"
  log "debootstrap bookworm from ${mirror:-deb.debian.org} into $rootfs"
  nice -n 10 debootstrap --variant=minbase \
    --include=python3,python3-venv,python-is-python3,ca-certificates,netbase \
    bookworm "$rootfs" "${mirror:-http://deb.debian.org/debian}" >"$CTR/debootstrap.log"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  # As Debian's slim images: no documentation (but the copyright files), manual pages or translations,
  # now or from later apt installs.
  find "$rootfs/usr/share/doc" -type f ! -name copyright -delete
  rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
  printf '%s\n' 'path-exclude=/usr/share/doc/*' 'path-include=/usr/share/doc/*/copyright' \
    'path-exclude=/usr/share/man/*' 'path-exclude=/usr/share/locale/*' >"$rootfs/etc/dpkg/dpkg.cfg.d/01-slim"
  tar -C "$rootfs" --one-file-system --numeric-owner -cf - . | podman import --change 'CMD ["python3"]' - "$LOCAL_BASE" >/dev/null
  rm -rf --one-file-system "$rootfs"
}

# The host's extra CAs (a TLS-inspecting proxy) as one bundle: passed to pip as a build secret.
ca_bundle() {
  if [ -n "${CA_BUNDLE:-}" ]; then
    echo "$CA_BUNDLE"
    return
  fi
  local bundle=$CTR/extra-ca.pem
  cat /usr/local/share/ca-certificates/*.crt >"$bundle" 2>/dev/null || : >"$bundle"
  echo "$bundle"
}

# build <Dockerfile> <tag>: prints the seconds it took on stdout.
build() {
  local dockerfile=$1 tag=$2 base=${BASE:-$LOCAL_BASE} t0
  local args=(--isolation chroot --pull=never --format docker --layers
    --build-arg "BASE=$base" --build-arg "MODEL=$MODEL" --secret "id=ca,src=$(ca_bundle)")
  [ -d "$WHEELS" ] && args+=(-v "$WHEELS:/wheels:ro" --build-arg WHEELS=/wheels)
  t0=$(date +%s)
  log "building $tag from $dockerfile (base $base, model $MODEL)"
  nice -n 10 buildah bud "${args[@]}" -f "$dockerfile" -t "$tag" . >"$CTR/build-$(basename "$dockerfile").log" 2>&1 \
    || { tail -40 "$CTR/build-$(basename "$dockerfile").log" >&2; return 1; }
  echo $(($(date +%s) - t0))
}

# Uncompressed: what podman reports; compressed: an OCI archive of gzip layers, what a pull moves.
sizes() {
  local image archive
  printf '%-32s %12s %12s\n' image uncompressed compressed
  for image in "$CPU_IMAGE" "$GPU_IMAGE"; do
    podman image exists "$image" || continue
    archive=$CTR/size.tar
    rm -f "$archive"
    nice -n 10 skopeo copy -q --dest-compress --dest-compress-format gzip "containers-storage:$image" "oci-archive:$archive" \
      >/dev/null
    printf '%-32s %9d MB %9d MB\n' "$image" \
      $(($(podman image inspect -f '{{.Size}}' "$image") / 1000000)) $(($(stat -c %s "$archive") / 1000000))
    rm -f "$archive"
  done
}

ctr_env
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(base cpu gpu sizes)
for step in "${steps[@]}"; do
  case $step in
    base) [ -n "${BASE:-}" ] || build_base ;;
    cpu) log "CPU image $CPU_IMAGE built in $(build docker/Dockerfile "$CPU_IMAGE") s" ;;
    gpu) log "GPU image $GPU_IMAGE built in $(build docker/Dockerfile.gpu "$GPU_IMAGE") s" ;;
    sizes) sizes ;;
    env) for v in CONTAINERS_STORAGE_CONF CONTAINERS_CONF BUILDAH_ISOLATION STORAGE_DRIVER; do
           echo "export $v=${!v}"; done ;;
    *) echo "unknown step $step (base, cpu, gpu, sizes, env)" >&2; exit 2 ;;
  esac
done
