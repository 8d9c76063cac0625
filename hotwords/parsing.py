"""Plain-text and CSV forms of a hot-word list (uploads, `--hotword-file`, `--hotwords "A, B"`).

Text: one phrase per line. CSV: `phrase,boost` per line, boost optional. Blank lines and lines starting
with `#` are skipped; a first CSV line `phrase,boost` is taken as a header. Errors name the line.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import NamedTuple

from pydantic import ValidationError

from hotwords.schema import Entry


class ParseError(ValueError):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


def _entry(line: int, phrase: str, boost: str | None) -> Entry:
    value: float | None = None
    if boost is not None and boost.strip():
        try:
            value = float(boost)
        except ValueError:
            raise ParseError(line, f"boost {boost.strip()!r} is not a number") from None
    try:
        return Entry(phrase=phrase, boost=value)
    except ValidationError as exc:
        raise ParseError(line, "; ".join(err["msg"] for err in exc.errors())) from None


def _skip(text: str) -> bool:
    stripped = text.strip()
    return not stripped or stripped.startswith("#")


class ParsedEntry(NamedTuple):
    line: int
    entry: Entry


def parse_text(body: str) -> list[ParsedEntry]:
    """One phrase per line."""
    return [
        ParsedEntry(n, _entry(n, line, None)) for n, line in enumerate(body.splitlines(), start=1) if not _skip(line)
    ]


def parse_csv(body: str) -> list[ParsedEntry]:
    """`phrase,boost` rows (boost optional); quoted phrases may contain commas."""
    entries: list[ParsedEntry] = []
    reader = csv.reader(io.StringIO(body, newline=""), strict=True)
    try:
        for row in reader:
            line = reader.line_num
            if not row or _skip(",".join(row)):
                continue
            if not entries and [cell.strip().lower() for cell in row] in (["phrase"], ["phrase", "boost"]):
                continue
            if len(row) > 2:
                raise ParseError(line, f"expected `phrase,boost`, got {len(row)} fields")
            entries.append(ParsedEntry(line, _entry(line, row[0], row[1] if len(row) == 2 else None)))
    except csv.Error as exc:
        raise ParseError(reader.line_num, f"malformed CSV: {exc}") from None
    return entries


def parse_hotword_file(path: str | Path) -> list[Entry]:
    """A `--hotword-file`: one phrase per line, optionally `phrase,boost`."""
    return [parsed.entry for parsed in parse_csv(Path(path).read_text(encoding="utf-8"))]


def parse_hotword_arg(value: str) -> list[Entry]:
    """`--hotwords "Zentrix Unlimited, Kestrava router"`: comma-separated phrases, default boost."""
    return [_entry(1, part, None) for part in value.split(",") if part.strip()]
