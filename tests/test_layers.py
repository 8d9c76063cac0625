"""Which package and which room of `ivr` may import which: arrows point one way only.

ivr.media is the floor; ivr.calls stands on it; ivr.sip and ivr.webrtc stand on both and not on each
other; ivr.app ties them together. asr_engine, hotwords and dialog are libraries of their own that
import no other voicenav package (asr_engine and dialog nothing of the others, hotwords likewise).
Checked twice: on the source (every import statement, wherever it sits) and by importing each room
alone in a fresh interpreter (what actually gets loaded).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ivr", "asr_engine", "hotwords", "dialog")

# what each room or package may not import (its own name always allowed)
FORBIDDEN: dict[str, frozenset[str]] = {
    "ivr.media": frozenset({"ivr.calls", "ivr.sip", "ivr.webrtc", "ivr.app"}),
    "ivr.calls": frozenset({"ivr.sip", "ivr.webrtc", "ivr.app"}),
    "ivr.sip": frozenset({"ivr.webrtc", "ivr.app"}),
    "ivr.webrtc": frozenset({"ivr.sip", "ivr.app"}),
    "asr_engine": frozenset({"ivr", "hotwords", "dialog"}),
    "hotwords": frozenset({"ivr", "asr_engine", "dialog"}),
    "dialog": frozenset({"ivr", "asr_engine", "hotwords"}),
}


def _module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, root: Path) -> set[str]:
    """Absolute names of everything `path` imports (relative imports resolved)."""
    module = _module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            prefix = (node.module or "") if node.level == 0 else ".".join(filter(None, (base, node.module)))
            found.add(prefix)
            found.update(f"{prefix}.{a.name}" for a in node.names)  # `from ivr import app`
    return found


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _owner(module: str) -> str | None:
    """The most specific entry of FORBIDDEN that `module` belongs to."""
    owners = [k for k in FORBIDDEN if _within(module, k)]
    return max(owners, key=len) if owners else None


def _violations(root: Path = ROOT) -> list[str]:
    bad = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            module = _module_name(path, root)
            owner = _owner(module)
            if owner is None:
                continue
            for name in sorted(_imports(path, root)):
                if any(_within(name, f) for f in FORBIDDEN[owner]):
                    bad.append(f"{module} imports {name}")
    return bad


def test_no_import_points_the_wrong_way() -> None:
    assert _violations() == []


def test_a_planted_back_arrow_is_caught(tmp_path: Path) -> None:
    media = tmp_path / "ivr" / "media"
    media.mkdir(parents=True)
    (media / "rtp.py").write_text("import ivr.app\n")
    (media / "dtmf.py").write_text("from ..sip import server\n")
    (media / "events.py").write_text("from . import rtp\nimport numpy\n")
    (tmp_path / "dialog").mkdir()
    (tmp_path / "dialog" / "flow.py").write_text("def f():\n    from ivr import calls\n")
    assert _violations(tmp_path) == [
        "ivr.media.dtmf imports ivr.sip",
        "ivr.media.dtmf imports ivr.sip.server",
        "ivr.media.rtp imports ivr.app",
        "dialog.flow imports ivr",
        "dialog.flow imports ivr.calls",
    ]


def _room_modules(room: str) -> list[str]:
    base = ROOT.joinpath(*room.split("."))
    return sorted(_module_name(p) for p in base.rglob("*.py"))


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_each_room_imports_alone(room: str) -> None:
    modules = _room_modules(room)
    assert modules, room
    forbidden = sorted(FORBIDDEN[room])
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"bad = sorted(m for m in sys.modules if any(m == f or m.startswith(f + '.') for f in {forbidden!r}))\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_a_sip_call_does_not_import_its_server() -> None:
    # the server feeds calls and implements their `CallHost`; the arrow goes from server to call
    assert not any(_within(n, "ivr.sip.server") for n in _imports(ROOT / "ivr" / "sip" / "call.py", ROOT))
