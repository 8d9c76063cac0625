#!/bin/sh
# pip install for image builds: `pip-install.sh <python> <pip install args...>`.
# Behind a TLS-inspecting proxy the build secret `ca` (RUN --mount=type=secret,id=ca) holds the extra CA
# bundle: it is added to the system bundle for this one command only, never written to a layer.
# WHEELS (a build argument naming a mounted wheel directory) is offered to pip as --find-links.
set -eu
python=$1
shift
if [ -s /run/secrets/ca ]; then
  bundle=$(mktemp)
  trap 'rm -f "$bundle"' EXIT
  cat /etc/ssl/certs/ca-certificates.crt /run/secrets/ca >"$bundle"
  export PIP_CERT="$bundle"
fi
if [ -n "${WHEELS:-}" ] && [ -d "$WHEELS" ]; then
  set -- --find-links "$WHEELS" "$@"
fi
"$python" -m pip install --no-cache-dir --disable-pip-version-check "$@"
