"""Flow definitions: the YAML file that says what a caller hears and where each answer leads.

Files are validated with pydantic; every error is reported with the line of the YAML node it concerns,
found by walking the `yaml.compose` node tree along the pydantic error location.

    id: demo
    start: main_menu
    settings: {no_input_timeout_ms: 5000, max_retries: 2, escalation: {route: agent}, repeat_key: "*",
               max_rejections: 2, max_call_rejections: 4, max_node_turns: 10, max_turns: 40}
    entities: {product: [Kestrava router, ...]}      # slot values the recognizer looks for
    nodes:
      main_menu:
        prompt: {text: "How can I help?", wav: prompts/main.wav}   # text and/or wav
        no_input: {text: ...}                                       # optional re-prompts
        no_match: {text: ...}
        grammar: free                                               # free | digits | yes_no
        hotwords: [Kestrava router, "@products"]                   # phrases, or @list names
        intents: {billing: {route: billing, say: {text: "One moment."}}, account: account_number}
        dtmf: {"1": {route: billing}, "4": account_number}
      account_number:
        prompt: {text: "Say or key in your account number."}
        confirm: {text: "I have {account_number}. Is that right?"}  # asked after collecting
        grammar: digits
        end_silence_ms: 1500                                        # else settings.digits_end_silence_ms
        collect: {slot: account_number, min_length: 6, max_length: 10, terminator: "#",
                  storable: false, next: {route: account}}   # storable: raw value kept in records
        max_rejections: 2                                           # "no" answers, then escalation
      goodbye:
        prompt: {text: "Goodbye."}
        then: {hangup: done}                                        # no input expected

The caller's turn ends after a pause: `end_silence_ms` on a node, else by grammar
(`settings.digits_end_silence_ms` is long, as callers breathe between digit groups;
`settings.yes_no_end_silence_ms` is short; a free node keeps the service's end-of-speech setting). A
spoken number also ends at once on the collection's terminator key, and after the service's shorter
pause when it already has `max_length` digits.

A target is a node name or exactly one of `goto`, `route`, `transfer`, `hangup` (with an optional
`say` prompt played first). "repeat" and "go back" (and `repeat_key`/`back_key`) work in every node.
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dialog.intents import IntentName

Grammar = Literal["free", "digits", "yes_no"]
DtmfKey = Literal["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "*", "#"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Prompt(_Strict):
    """Something to play: text for the synthesizer and/or a recorded WAV (played when present)."""

    text: str | None = Field(default=None, min_length=1)
    wav: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _needs_content(self) -> Prompt:
        if self.text is None and self.wav is None:
            raise ValueError("a prompt needs `text` and/or `wav`")
        return self


class Target(_Strict):
    """Where an answer leads: exactly one of another node, a queue, a SIP/WebRTC transfer or a hangup."""

    goto: str | None = None
    route: str | None = None
    transfer: str | None = None
    hangup: str | None = None
    say: Prompt | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        # `"1": billing_menu` is the common case; spelling out `{goto: ...}` every time is noise.
        return {"goto": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _exactly_one(self) -> Target:
        chosen = [k for k in ("goto", "route", "transfer", "hangup") if getattr(self, k) is not None]
        if len(chosen) != 1:
            raise ValueError("a target needs exactly one of `goto`, `route`, `transfer`, `hangup`")
        return self


class DigitCollection(_Strict):
    """Collect a number (speech or keypad) into a slot, then go to `next`."""

    slot: str = Field(min_length=1)
    min_length: int = Field(default=1, ge=1, le=32)
    max_length: int = Field(ge=1, le=32)
    terminator: Literal["#"] | None = "#"
    # False: the value is caller data (account number, PIN) and is masked in records and logs.
    storable: bool = False
    next: Target

    @model_validator(mode="after")
    def _bounds(self) -> DigitCollection:
        if self.min_length > self.max_length:
            raise ValueError("min_length is greater than max_length")
        return self


def _dtmf_key(value: Any) -> Any:
    # YAML reads an unquoted `1:` as an int; keys are keypad characters.
    return str(value) if isinstance(value, int) else value


class Node(_Strict):
    prompt: Prompt
    no_input: Prompt | None = None
    no_match: Prompt | None = None
    confirm: Prompt | None = None
    grammar: Grammar = "free"
    hotwords: list[str] = Field(default_factory=list)
    intents: dict[IntentName, Target] = Field(default_factory=dict)
    dtmf: dict[DtmfKey, Target] = Field(default_factory=dict)
    collect: DigitCollection | None = None
    then: Target | None = None
    barge_in: bool | None = None
    timeout_ms: int | None = Field(default=None, ge=500, le=60_000)
    end_silence_ms: int | None = Field(default=None, ge=100, le=5000)
    max_rejections: int | None = Field(default=None, ge=0, le=20)  # overrides settings.max_rejections
    max_turns: int | None = Field(default=None, ge=1, le=200)  # overrides settings.max_node_turns

    @field_validator("dtmf", mode="before")
    @classmethod
    def _dtmf_keys_as_text(cls, value: Any) -> Any:
        return {_dtmf_key(k): v for k, v in value.items()} if isinstance(value, dict) else value

    @field_validator("hotwords")
    @classmethod
    def _hotwords_nonempty(cls, value: list[str]) -> list[str]:
        if any(not h.strip() or h.strip() == "@" for h in value):
            raise ValueError("empty hot word")
        return value

    @model_validator(mode="after")
    def _shape(self) -> Node:
        if self.then is not None and (self.intents or self.dtmf or self.collect):
            raise ValueError("a node with `then` takes no input: drop `intents`, `dtmf` and `collect`")
        if self.collect is not None and (self.intents or self.dtmf):
            raise ValueError("a collecting node cannot also have `intents` or `dtmf`")
        if self.collect is not None and self.grammar != "digits":
            raise ValueError("a collecting node needs `grammar: digits`")
        if self.confirm is not None and self.collect is None:
            raise ValueError("`confirm` only applies to a node that collects digits")
        if self.max_rejections is not None and self.confirm is None:
            raise ValueError("`max_rejections` only applies to a node with `confirm`")
        if self.then is None and self.collect is None and not (self.intents or self.dtmf):
            raise ValueError("a node needs `intents`/`dtmf`, `collect` or `then`")
        return self

    @property
    def phrases(self) -> tuple[str, ...]:
        """Literal hot-word phrases for the recognizer."""
        return tuple(h for h in self.hotwords if not h.startswith("@"))

    @property
    def hotword_lists(self) -> tuple[str, ...]:
        """Names of admin-managed hot-word lists (written `@name`)."""
        return tuple(h[1:] for h in self.hotwords if h.startswith("@"))


class Settings(_Strict):
    no_input_timeout_ms: int = Field(default=5000, ge=500, le=60_000)
    digit_timeout_ms: int = Field(default=4000, ge=500, le=60_000)
    max_retries: int = Field(default=2, ge=0, le=10)
    # Loops a caller can keep going forever ("no" to every confirmation, "repeat" again and again) end
    # in the escalation target: per node, per call, and on the answers the dialog gives.
    max_rejections: int = Field(default=2, ge=0, le=20)  # "no" to a confirmation in one node
    max_call_rejections: int = Field(default=4, ge=0, le=50)  # "no" to confirmations in the whole call
    max_node_turns: int = Field(default=10, ge=1, le=200)  # answers given in one node
    max_turns: int = Field(default=40, ge=1, le=500)  # answers given in the whole call
    min_confidence: float = Field(default=0.5, ge=0.0, le=1.0)
    # Silence that ends a turn by grammar: a spoken number has pauses between groups ("555 | 0138"),
    # a yes or no is over at once.
    digits_end_silence_ms: int = Field(default=1200, ge=100, le=5000)
    yes_no_end_silence_ms: int = Field(default=300, ge=100, le=5000)
    escalation: Target = Target(route="agent")
    escalation_prompt: Prompt | None = Prompt(text="Let me get someone to help you.")
    no_input: Prompt = Prompt(text="Sorry, I didn't hear anything.")
    no_match: Prompt = Prompt(text="Sorry, I didn't get that.")
    barge_in: bool = True
    repeat_key: DtmfKey | None = "*"
    back_key: DtmfKey | None = None
    confirm_yes_key: DtmfKey = "1"
    confirm_no_key: DtmfKey = "2"

    @field_validator("repeat_key", "back_key", "confirm_yes_key", "confirm_no_key", mode="before")
    @classmethod
    def _key_text(cls, value: Any) -> Any:
        return _dtmf_key(value)


class Flow(_Strict):
    id: str = Field(min_length=1)
    start: str
    settings: Settings = Settings()
    # Named entity lists (e.g. `product: [Kestrava router, ...]`) the recognizer fills slots from.
    entities: dict[str, list[str]] = Field(default_factory=dict)
    nodes: dict[str, Node] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class FlowIssue:
    line: int | None
    location: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        return f"{where}{self.location}: {self.message}" if self.location else f"{where}{self.message}"


class FlowError(ValueError):
    """A flow file that cannot be used; `issues` each carry the YAML line they concern."""

    def __init__(self, source: str, issues: list[FlowIssue]) -> None:
        self.source = source
        self.issues = issues
        super().__init__(f"invalid flow {source}:\n" + "\n".join(f"  {i}" for i in issues))


def _line_of(root: yaml.Node | None, loc: Iterable[Any]) -> int | None:
    """1-based line of the deepest YAML node reachable along `loc` (a mapping entry's key line)."""
    if root is None:
        return None
    node = root
    line = root.start_mark.line
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    child, line = value, key.start_mark.line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = node.value[part]
            line = child.start_mark.line
        if child is None:
            break
        node = child
    return line + 1


def _duplicate_keys(node: yaml.Node, path: tuple[str, ...] = ()) -> list[FlowIssue]:
    # safe_load keeps the last of two equal keys silently; a second DTMF "1" must be an error.
    issues: list[FlowIssue] = []
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else "?"
            line = key.start_mark.line + 1
            if name in seen:
                issues.append(FlowIssue(line, ".".join(path), f"duplicate key {name!r} (first at line {seen[name]})"))
            else:
                seen[name] = line
            issues.extend(_duplicate_keys(value, (*path, name)))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            issues.extend(_duplicate_keys(item, (*path, str(i))))
    return issues


def _references(flow: Flow) -> list[tuple[tuple[Any, ...], str]]:
    problems: list[tuple[tuple[Any, ...], str]] = []

    def check(target: Target, loc: tuple[Any, ...]) -> None:
        if target.goto is not None and target.goto not in flow.nodes:
            problems.append(((*loc, "goto"), f"unknown target node {target.goto!r}"))

    if flow.start not in flow.nodes:
        problems.append((("start",), f"unknown start node {flow.start!r}"))
    check(flow.settings.escalation, ("settings", "escalation"))
    s = flow.settings
    if s.confirm_yes_key == s.confirm_no_key:
        problems.append((("settings", "confirm_no_key"), "confirm yes and no keys are the same"))
    if s.repeat_key is not None and s.repeat_key == s.back_key:
        problems.append((("settings", "back_key"), "repeat and back use the same DTMF key"))
    for key_name in ("confirm_yes_key", "confirm_no_key"):
        if getattr(s, key_name) in (s.repeat_key, s.back_key):
            problems.append((("settings", key_name), "confirm key is also the repeat or back key"))
    global_keys = {k: name for k, name in ((s.repeat_key, "repeat_key"), (s.back_key, "back_key")) if k}
    for name, node in flow.nodes.items():
        for intent, target in node.intents.items():
            check(target, ("nodes", name, "intents", intent))
        for key, target in node.dtmf.items():
            check(target, ("nodes", name, "dtmf", key))
            if key in global_keys:
                taken = f"DTMF key {key!r} is taken by settings.{global_keys[key]}"
                problems.append((("nodes", name, "dtmf", key), taken))
        if node.collect is not None:
            check(node.collect.next, ("nodes", name, "collect", "next"))
        if node.then is not None:
            check(node.then, ("nodes", name, "then"))
    problems.extend(_then_cycles(flow))
    problems.extend(_placeholders(flow))
    return problems


def _placeholders(flow: Flow) -> list[tuple[tuple[Any, ...], str]]:
    """`{name}` in a prompt must be a slot the flow can fill: a collected number or an entity."""
    known = {n.collect.slot for n in flow.nodes.values() if n.collect is not None} | set(flow.entities)
    problems: list[tuple[tuple[Any, ...], str]] = []

    def walk(obj: Any, loc: tuple[Any, ...]) -> None:
        if isinstance(obj, Prompt):
            if obj.text is None:
                return
            try:
                names = [f for _, f, _, _ in string.Formatter().parse(obj.text) if f is not None]
            except ValueError as exc:
                problems.append(((*loc, "text"), f"bad placeholder: {exc}"))
                return
            unknown = sorted(set(names) - known)
            if unknown:
                message = f"unknown slot(s) {unknown} in prompt; known: {sorted(known)}"
                problems.append(((*loc, "text"), message))
        elif isinstance(obj, BaseModel):
            for name in type(obj).model_fields:
                walk(getattr(obj, name), (*loc, name))
        elif isinstance(obj, dict):
            for key, value in obj.items():
                walk(value, (*loc, key))

    walk(flow, ())
    return problems


def _then_cycles(flow: Flow) -> list[tuple[tuple[Any, ...], str]]:
    """Nodes whose `then` chain comes back to itself would loop without ever waiting for the caller."""
    problems: list[tuple[tuple[Any, ...], str]] = []
    for name in flow.nodes:
        seen = [name]
        current = flow.nodes[name].then
        while current is not None and current.goto in flow.nodes:
            if current.goto == name:
                chain = " -> ".join([*seen, name])
                problems.append((("nodes", name, "then"), f"`then` loop without input: {chain}"))
                break
            if current.goto in seen:
                break
            seen.append(current.goto)
            current = flow.nodes[current.goto].then
    return problems


def parse_flow(text: str, source: str = "<flow>") -> Flow:
    """Parse and validate a flow; raise `FlowError` naming the line of each problem."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise FlowError(source, [FlowIssue(line, "", f"YAML syntax: {exc.problem or exc}")]) from exc
    except yaml.YAMLError as exc:
        raise FlowError(source, [FlowIssue(None, "", f"YAML: {exc}")]) from exc
    if root is None or not isinstance(data, dict):
        raise FlowError(source, [FlowIssue(_line_of(root, ()), "", "a flow must be a mapping")])
    duplicates = _duplicate_keys(root)
    if duplicates:
        raise FlowError(source, duplicates)
    try:
        flow = Flow.model_validate(data)
    except ValidationError as exc:
        issues = [
            FlowIssue(
                _line_of(root, err["loc"]),
                ".".join(str(p) for p in err["loc"]),
                err["msg"],
            )
            for err in exc.errors()
        ]
        raise FlowError(source, issues) from exc
    problems = _references(flow)
    if problems:
        raise FlowError(
            source,
            [FlowIssue(_line_of(root, loc), ".".join(str(p) for p in loc), msg) for loc, msg in problems],
        )
    return flow


def load_flow(path: str | Path) -> Flow:
    """Read a flow file (blocking; call at startup or via `asyncio.to_thread`)."""
    p = Path(path)
    return parse_flow(p.read_text(encoding="utf-8"), source=str(p))


def load_demo_flow() -> Flow:
    """The built-in contact-center flow used when no flow file is configured."""
    text = resources.files("dialog").joinpath("flows/demo.yaml").read_text(encoding="utf-8")
    return parse_flow(text, source="dialog/flows/demo.yaml")
