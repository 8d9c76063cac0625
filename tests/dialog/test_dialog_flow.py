from __future__ import annotations

import textwrap

import pytest

from dialog.flow import FlowError, load_demo_flow, load_flow, parse_flow


def test_demo_flow_is_valid() -> None:
    flow = load_demo_flow()
    assert flow.start == "main_menu"
    menu = flow.nodes["main_menu"]
    assert {t.route for t in menu.intents.values()} >= {"billing", "tech_support", "sales", "cancel", "agent"}
    assert {k: t.route or t.goto for k, t in menu.dtmf.items()} == {
        "1": "billing",
        "2": "tech_support",
        "3": "sales",
        "4": "account_number",
        "0": "agent",
    }
    collect = flow.nodes["account_number"].collect
    assert collect is not None and collect.next.route == "account"


GOOD = textwrap.dedent(
    """\
    id: t
    start: menu
    nodes:
      menu:
        prompt: {text: Hello}
        intents:
          billing: {route: billing}
        dtmf:
          "1": {route: billing}
          "2": other
      other:
        prompt: {text: Other}
        then: {hangup: done}
    """
)


def _line_error(text: str) -> FlowError:
    with pytest.raises(FlowError) as info:
        parse_flow(text, source="t.yaml")
    return info.value


def _lines(err: FlowError) -> list[int | None]:
    return [i.line for i in err.issues]


def test_good_flow_parses() -> None:
    flow = parse_flow(GOOD)
    assert flow.nodes["menu"].dtmf["2"].goto == "other"


def test_bad_type_names_its_line() -> None:
    text = GOOD.replace("id: t\nstart: menu\n", "id: t\nstart: menu\nsettings:\n  max_retries: lots\n")
    err = _line_error(text)
    assert _lines(err) == [4]
    assert "line 4" in str(err) and "max_retries" in str(err)


def test_unknown_target_node_names_its_line() -> None:
    err = _line_error(GOOD.replace('"2": other', '"2": nowhere'))
    assert _lines(err) == [10]
    assert "line 10" in str(err) and "unknown target node 'nowhere'" in str(err)


def test_unknown_start_node() -> None:
    err = _line_error(GOOD.replace("start: menu", "start: lobby"))
    assert _lines(err) == [2]


def test_duplicate_dtmf_key_names_the_second_line() -> None:
    err = _line_error(GOOD.replace('"2": other', '"1": other'))
    assert _lines(err) == [10]
    assert "duplicate key '1' (first at line 9)" in str(err)


def test_duplicate_dtmf_key_quoted_and_unquoted() -> None:
    err = _line_error(GOOD.replace('"2": other', "1: other"))
    assert _lines(err) == [10]


def test_missing_prompt_points_at_the_node() -> None:
    err = _line_error(GOOD.replace("    prompt: {text: Other}\n", ""))
    assert _lines(err) == [11]
    assert "nodes.other.prompt" in str(err)


def test_unknown_intent_and_bad_dtmf_key_are_all_reported() -> None:
    text = GOOD.replace("billing: {route: billing}", "bilin: {route: billing}").replace('"2"', '"22"')
    err = _line_error(text)
    assert sorted(_lines(err)) == [7, 10]


def test_target_needs_exactly_one_action() -> None:
    err = _line_error(GOOD.replace("{hangup: done}", "{hangup: done, route: sales}"))
    assert _lines(err) == [13]


def test_repeat_key_collision() -> None:
    err = _line_error(GOOD.replace('"2": other', '"*": other'))
    assert _lines(err) == [10]
    assert "repeat_key" in str(err)


def test_then_loop_is_rejected() -> None:
    loop = GOOD.replace("{hangup: done}", "menu2") + "  menu2:\n    prompt: {text: x}\n    then: other\n"
    err = _line_error(loop)
    assert "loop" in str(err)
    assert 13 in _lines(err)


def test_yaml_syntax_error_names_line() -> None:
    err = _line_error(GOOD.replace("  other:\n", "  other: [\n"))
    assert err.issues[0].line is not None and err.issues[0].line >= 11


def test_collect_requires_digits_grammar() -> None:
    text = GOOD + "  num:\n    prompt: {text: Number}\n    collect: {slot: n, max_length: 4, next: menu}\n"
    err = _line_error(text)
    assert _lines(err) == [14]
    assert "grammar: digits" in str(err)


def test_load_flow_from_file(tmp_path) -> None:
    path = tmp_path / "f.yaml"
    path.write_text(GOOD.replace('"2": other', '"2": gone'))
    with pytest.raises(FlowError) as info:
        load_flow(path)
    assert str(path) in str(info.value) and "line 10" in str(info.value)


def test_prompt_placeholders_must_be_known_slots() -> None:
    err = _line_error(GOOD.replace("prompt: {text: Other}", "prompt: {text: 'Your number is {acount}'}"))
    assert _lines(err) == [12] and "unknown slot(s) ['acount']" in str(err)
    err = _line_error(GOOD.replace("prompt: {text: Other}", "prompt: {text: 'Broken {'}"))
    assert _lines(err) == [12] and "bad placeholder" in str(err)
