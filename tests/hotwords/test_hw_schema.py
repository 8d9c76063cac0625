from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from hotwords.auth import AdminAuth, AuthParams
from hotwords.parsing import ParseError, parse_csv, parse_hotword_arg, parse_hotword_file, parse_text
from hotwords.schema import MAX_PHRASES, Entry, HotwordListIn, normalize_phrase, validate_scope


def test_normalization_nfkc_casefold_spaces() -> None:
    assert normalize_phrase("  Ｚｅｎｔｒｉｘ \t  UNLIMITED ") == "zentrix unlimited"
    assert Entry(phrase="  Kestrava   router ").phrase == "Kestrava router"


@pytest.mark.parametrize("scope", ["global", "tenant:acme", "flow:sales-1", "node:sales/menu", "call:4f2a.9:1"])
def test_valid_scopes(scope: str) -> None:
    assert validate_scope(scope) == scope


@pytest.mark.parametrize("scope", ["", "tenant:", "tenant", "node:sales", "planet:x", "flow:a b", "global2"])
def test_invalid_scopes(scope: str) -> None:
    with pytest.raises(ValueError, match="invalid scope"):
        validate_scope(scope)


@pytest.mark.parametrize(
    ("phrase", "message"),
    [
        ("", "at least 1 character"),
        ("   ", "empty"),
        ("Zen\ttrix", "control characters"),
        ("a\nb", "control characters"),
        ("x" * 101, "longer than 100"),
    ],
)
def test_bad_phrases(phrase: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Entry(phrase=phrase)


@pytest.mark.parametrize("boost", [0, -1, 10.5])
def test_boost_bounds(boost: float) -> None:
    with pytest.raises(ValidationError):
        Entry(phrase="Zentrix", boost=boost)
    assert Entry(phrase="Zentrix", boost=10).boost == 10


def test_duplicates_after_normalization_name_both_entries() -> None:
    with pytest.raises(ValidationError) as info:
        HotwordListIn(entries=[Entry(phrase="Zentrix"), Entry(phrase="x"), Entry(phrase="ZENTRIX ")])
    err = info.value.errors()[0]
    assert err["type"] == "duplicate_phrase"
    assert err["ctx"]["index"] == 2 and err["ctx"]["first"] == 0


def test_phrase_count_limit() -> None:
    entries = [Entry(phrase=f"name {i}") for i in range(MAX_PHRASES)]
    assert len(HotwordListIn(entries=entries).entries) == MAX_PHRASES
    with pytest.raises(ValidationError, match="at most 2000"):
        HotwordListIn(entries=[*entries, Entry(phrase="one more")])


def test_unknown_fields_and_defaults() -> None:
    content = HotwordListIn(entries=[Entry(phrase="Zentrix")])
    assert (content.scope, content.language, content.entries[0].boost) == ("global", "en", None)
    with pytest.raises(ValidationError):
        HotwordListIn.model_validate({"entries": [], "colour": "red"})


def test_parse_text_skips_blank_and_comments_keeps_line_numbers() -> None:
    parsed = parse_text("# products\nZentrix Unlimited\n\n  Kestrava router  \n")
    assert [(p.line, p.entry.phrase) for p in parsed] == [(2, "Zentrix Unlimited"), (4, "Kestrava router")]


def test_parse_text_reports_bad_line() -> None:
    with pytest.raises(ParseError) as info:
        parse_text("Zentrix\n" + "y" * 150 + "\n")
    assert info.value.line == 2


def test_parse_csv_with_header_quotes_and_optional_boost() -> None:
    parsed = parse_csv('phrase,boost\nZentrix Unlimited,4.5\n"Smith, Jones and Co"\nKestrava router,\n')
    assert [(p.line, p.entry.phrase, p.entry.boost) for p in parsed] == [
        (2, "Zentrix Unlimited", 4.5),
        (3, "Smith, Jones and Co", None),
        (4, "Kestrava router", None),
    ]


@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        ("Zentrix,2\nKestrava,lots\n", 2, "not a number"),
        ("a,1\nb,2\nc,3,4\n", 3, "got 3 fields"),
        ('a,1\n"unterminated,2\n', 2, "malformed CSV"),
        ("a,1\nb,11\n", 2, "less than or equal to 10"),
    ],
)
def test_parse_csv_errors_name_the_line(body: str, line: int, message: str) -> None:
    with pytest.raises(ParseError, match=message) as info:
        parse_csv(body)
    assert info.value.line == line


def test_hotword_file_and_cli_argument(tmp_path: Path) -> None:
    path = tmp_path / "words.txt"
    path.write_text("Zentrix Unlimited\nKestrava router,5\n", encoding="utf-8")
    assert [(e.phrase, e.boost) for e in parse_hotword_file(path)] == [
        ("Zentrix Unlimited", None),
        ("Kestrava router", 5.0),
    ]
    assert [e.phrase for e in parse_hotword_arg("Zentrix Unlimited,  NovaPay wallet ,")] == [
        "Zentrix Unlimited",
        "NovaPay wallet",
    ]


def test_admin_tokens_from_file_or_token(tmp_path: Path) -> None:
    secret = tmp_path / "tokens"
    secret.write_text("# admins\nalice:s3cret-a\nbob: s3cret-b\n", encoding="utf-8")
    auth = AdminAuth.from_params(AuthParams(token_file=secret, token="ignored"))
    assert auth.identify("Bearer s3cret-a") == "alice"
    assert auth.identify("bearer s3cret-b") == "bob"
    assert auth.identify("Bearer ignored") is None
    assert auth.identify("Basic s3cret-a") is None
    assert auth.identify(None) is None
    assert AdminAuth.from_params(AuthParams(token="tok")).identify("Bearer tok") == "admin"
    with pytest.raises(ValueError, match="no API token"):
        AdminAuth.from_params(AuthParams())
    with pytest.raises(ValueError, match="no API token"):
        AdminAuth.from_params(AuthParams(token=" "))
    with pytest.raises(ValueError, match="line 2"):
        AdminAuth.parse("a:1\na:2\n")
