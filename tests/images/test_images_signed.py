"""Signed images: the CPU image signed with a throw-away GPG key (skopeo simple signing) into a local
`dir:` store runs under a policy that requires that signature; unsigned or re-tagged copies are refused."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.images.conftest import ctr_env, podman

pytestmark = pytest.mark.timeout(900)

SIGNED_AS = "localhost/voicenav:signed"


@pytest.fixture(scope="module")
def gnupg_home() -> Iterator[Path]:
    # gpg-agent's socket path must stay short: not under pytest's deep tmp_path.
    home = Path(tempfile.mkdtemp(prefix="vn-gpg-", dir="/tmp"))
    home.chmod(0o700)
    yield home
    subprocess.run(["gpgconf", "--kill", "gpg-agent"], env={**os.environ, "GNUPGHOME": str(home)}, check=False)
    shutil.rmtree(home, ignore_errors=True)


def _gpg(home: Path, *args: str) -> bytes:
    cmd = ["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "", *args]
    out = subprocess.run(cmd, env={**os.environ, "GNUPGHOME": str(home)}, capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    return out.stdout


def _new_key(home: Path) -> str:
    """A throw-away signing key without passphrase; its fingerprint."""
    _gpg(home, "--quick-gen-key", "voicenav image signing (test) <images@voicenav.invalid>", "ed25519", "sign", "1d")
    listing = _gpg(home, "--with-colons", "--list-secret-keys").decode()
    return next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr"))


def _skopeo(home: Path, *args: str) -> None:
    out = subprocess.run(
        ["skopeo", *args], env={**ctr_env(), "GNUPGHOME": str(home)}, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]


def _requires(identity: str, key: Path) -> list[dict]:
    by_key = {"type": "signedBy", "keyType": "GPGKeys", "keyPath": str(key)}
    return [{**by_key, "signedIdentity": {"type": "exactReference", "dockerReference": identity}}]


def test_only_the_signed_image_runs_under_a_signature_policy(cpu_image: str, gnupg_home: Path, tmp_path: Path) -> None:
    fingerprint = _new_key(gnupg_home)
    key = tmp_path / "signing-key.gpg"
    key.write_bytes(_gpg(gnupg_home, "--export", fingerprint))

    store = tmp_path / "store"
    signed, unsigned, retagged = store / "signed", store / "unsigned", store / "prod"
    store.mkdir()
    _skopeo(gnupg_home, "copy", "-q", "--sign-by", fingerprint, "--sign-identity", SIGNED_AS,
            f"containers-storage:{cpu_image}", f"dir:{signed}")  # fmt: skip
    assert list(signed.glob("signature-*")), "skopeo wrote no signature"
    # The same image without its signature, and the signed image promoted to another name.
    shutil.copytree(signed, unsigned, copy_function=os.link, ignore=shutil.ignore_patterns("signature-*"))
    shutil.copytree(signed, retagged, copy_function=os.link)

    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({
        "default": [{"type": "reject"}],
        "transports": {"dir": {
            str(signed): _requires(SIGNED_AS, key),
            str(unsigned): _requires(SIGNED_AS, key),
            str(retagged): _requires("localhost/voicenav:prod", key),
        }},
    }))  # fmt: skip

    # The pulled image is the very image it was copied from (same ID), so it is not removed afterwards.
    pulled = podman("pull", "-q", "--signature-policy", str(policy), f"dir:{signed}", timeout=600).stdout.split()[-1]
    ran = podman("run", "--rm", "--network", "none", "--entrypoint", "python", pulled, "-c", "print('verified')")
    assert ran.stdout.strip() == "verified"

    refused = podman("pull", "-q", "--signature-policy", str(policy), f"dir:{unsigned}", check=False)
    assert refused.returncode != 0 and "signature" in refused.stderr.lower(), refused.stderr
    refused = podman("pull", "-q", "--signature-policy", str(policy), f"dir:{retagged}", check=False)
    assert refused.returncode != 0 and "not accepted" in refused.stderr, refused.stderr
