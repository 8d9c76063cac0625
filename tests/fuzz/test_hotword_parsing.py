"""Hot-word text and CSV parsers: any text gives entries or a ParseError naming a line."""

from __future__ import annotations

import contextlib

from hypothesis import given
from hypothesis import strategies as st

from hotwords.parsing import ParseError, parse_csv, parse_hotword_arg, parse_text
from hotwords.schema import MAX_BOOST, Entry

_TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=400)
_CSVISH = st.lists(
    st.one_of(
        st.text(alphabet='ab ,"#\t\r\n1.e-9', max_size=20),
        st.from_regex(r'"?[A-Za-z ]{0,12}"?,-?[0-9.e+]{0,8}', fullmatch=True),
        st.sampled_from(["nan", "inf", "-inf", "1e400", "phrase,boost", "\x00", "\u2028", "Ａ"]),
    ),
    max_size=12,
).map("\n".join)


def _valid(entries: list[Entry]) -> None:
    for entry in entries:
        assert entry.phrase.strip() and (entry.boost is None or 0 < entry.boost <= MAX_BOOST)


@given(st.one_of(_TEXT, _CSVISH))
def test_csv_gives_entries_or_parse_error(body: str) -> None:
    try:
        parsed = parse_csv(body)
    except ParseError as exc:
        assert exc.line >= 0
        return
    _valid([p.entry for p in parsed])


@given(st.one_of(_TEXT, _CSVISH))
def test_text_gives_entries_or_parse_error(body: str) -> None:
    try:
        parsed = parse_text(body)
    except ParseError as exc:
        assert exc.line >= 1
        return
    _valid([p.entry for p in parsed])


@given(_TEXT)
def test_hotword_arg_gives_entries_or_parse_error(value: str) -> None:
    with contextlib.suppress(ParseError):
        _valid(parse_hotword_arg(value))
