"""Reader for CTranslate2 `model.bin` files (binary format version 6, as written by ctranslate2 >= 3).

Layout: u32 version, string spec name, u32 spec revision, u32 variable count, then per variable a
string name, u8 rank, u32 dims, u8 dtype, u32 byte count and the raw data; then u32 alias count and
(alias, target) string pairs. Strings are u16 length (including a NUL) + bytes.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

# ctranslate2's DataType enum order.
_DTYPES: dict[int, np.dtype] = {
    0: np.dtype(np.float32),
    1: np.dtype(np.int8),
    2: np.dtype(np.int16),
    3: np.dtype(np.int32),
    4: np.dtype(np.float16),
}


class ModelFormatError(ValueError):
    """The file is not a CTranslate2 model this reader understands."""


class _Cursor:
    def __init__(self, data: memoryview) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise ModelFormatError(f"truncated at byte {self.pos} (wanted {n} more)")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack("<H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def string(self) -> str:
        n = self.u16()
        return bytes(self.take(n)[: max(n - 1, 0)]).decode("utf-8")


def read_ct2_model(path: Path, spec: str = "WhisperSpec") -> dict[str, np.ndarray]:
    """All variables of a model.bin, aliases resolved, as numpy arrays (views of one buffer)."""
    cur = _Cursor(memoryview(Path(path).read_bytes()))
    version = cur.u32()
    if version < 5:
        raise ModelFormatError(f"{path}: binary version {version} is too old (need >= 5)")
    name = cur.string()
    cur.u32()  # spec revision
    if name != spec:
        raise ModelFormatError(f"{path}: model spec is {name!r}, expected {spec!r}")
    variables: dict[str, np.ndarray] = {}
    for _ in range(cur.u32()):
        var = cur.string()
        dims = [cur.u32() for _ in range(cur.u8())]
        code = cur.u8()
        nbytes = cur.u32()
        if code not in _DTYPES:
            raise ModelFormatError(f"{path}: {var} has unsupported dtype code {code}")
        raw = cur.take(nbytes)
        variables[var] = np.frombuffer(raw, dtype=_DTYPES[code]).reshape(dims)
    for _ in range(cur.u32()):
        alias, target = cur.string(), cur.string()
        variables[alias] = variables[target]
    return variables
