from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import hotwords

MODULES = sorted(p.stem for p in Path(hotwords.__file__).parent.glob("*.py") if p.stem != "__init__")


def test_hotwords_imports_none_of_the_other_packages() -> None:
    imports = "; ".join(f"import hotwords.{name}" for name in MODULES)
    check = "bad = {'ivr', 'asr_engine', 'dialog'} & set(sys.modules); assert not bad, bad"
    code = f"import sys; {imports}; {check}"
    root = Path(hotwords.__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert len(MODULES) >= 12
