"""The biasing graph: hot phrases compiled into an Aho-Corasick automaton over Whisper token ids.

It satisfies the decoder's `Biaser`/`BiasState` protocol structurally. Scoring rules:
- the first piece of a phrase gets `first_piece_boost` (default 0): unknown names start with short, common
  pieces (' Z', ' K') and boosting those alone makes greedy decoding loop on them;
- each continuation of a partial match gets the phrase's boost;
- the boosts granted to a partial match are "at risk" until the phrase completes; a token that abandons
  the match returns a negative correction that cancels them (falling back to a suffix that is itself a
  partial match keeps what that suffix would have earned, never more than was granted);
- a completed phrase banks its boosts.
"""

from __future__ import annotations

import time
from collections import ChainMap, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import groupby
from types import MappingProxyType
from typing import Literal

Encode = Callable[[str], list[int]]
Decode = Callable[[list[int]], str]

_EMPTY: Mapping[int, float] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class WeightedPhrase:
    phrase: str
    boost: float
    group: str = ""  # the list it came from: the prompt takes whole lists or none of one


@dataclass(frozen=True, slots=True)
class TokenizationIssue:
    phrase: str
    reason: Literal["not_representable", "too_many_tokens"]
    detail: str


def _title(phrase: str) -> str:
    # Capitalize each word's first letter only: "NovaPay wallet" -> "NovaPay Wallet" (str.title would
    # give "Novapay Wallet").
    return " ".join(word[:1].upper() + word[1:] for word in phrase.split(" "))


def _roundtrips(text: str, encode: Encode, decode: Decode) -> list[int] | None:
    ids = encode(text)
    return ids if ids and decode(ids) == text else None


def check_phrase(phrase: str, encode: Encode, decode: Decode, max_tokens: int) -> TokenizationIssue | None:
    """Why the tokenizer cannot carry `phrase` as given, or None if it can."""
    ids = _roundtrips(" " + phrase, encode, decode)
    if ids is None:
        return TokenizationIssue(phrase, "not_representable", "tokenizer encode/decode does not round-trip")
    if len(ids) > max_tokens:
        return TokenizationIssue(phrase, "too_many_tokens", f"{len(ids)} tokens > {max_tokens}")
    return None


def phrase_variants(phrase: str, encode: Encode, decode: Decode) -> list[tuple[int, ...]]:
    """Token sequences of the phrase as given, lowercased and capitalized, each with and without a
    leading space; variants that do not round-trip are left out."""
    seen: dict[tuple[int, ...], None] = {}
    for form in dict.fromkeys((phrase, phrase.lower(), _title(phrase))):
        for text in (" " + form, form):
            ids = _roundtrips(text, encode, decode)
            if ids is not None:
                seen[tuple(ids)] = None
    return list(seen)


@dataclass(frozen=True, slots=True)
class GraphState:
    """Where a hypothesis stands in the graph. Immutable and hashable: beam hypotheses share states."""

    graph: BiasGraph
    node: int
    at_risk: float
    completed: tuple[str, ...] = ()  # phrases completed by the token that led to this state

    def boosts(self) -> Mapping[int, float]:
        return self.graph.boosts_at(self.node)

    def advance(self, token: int) -> tuple[GraphState, float]:
        return self.graph.advance(self, token)

    def prompt_text(self) -> str:
        return self.graph.prompt


class BiasGraph:
    """Compiled phrases. Build with `compile_graph`; `start()` gives a fresh state per utterance."""

    def __init__(
        self,
        children: list[dict[int, int]],
        fail: list[int],
        score: list[float],
        outputs: list[tuple[str, ...]],
        merged: list[Mapping[int, float]],
        root_boosts: Mapping[int, float],
        phrases: tuple[str, ...],
        prompt: str,
        compile_seconds: float,
    ) -> None:
        self._children = children
        self._fail = fail
        self._score = score
        self._outputs = outputs
        self._merged = merged
        self._root_boosts = root_boosts
        self._tokens = frozenset(token for kids in children for token in kids)
        self.phrases = phrases
        self.prompt = prompt
        self.compile_seconds = compile_seconds
        self._start = GraphState(self, 0, 0.0)

    @property
    def node_count(self) -> int:
        return len(self._children)

    def start(self) -> GraphState:
        return self._start

    def boosts_at(self, node: int) -> Mapping[int, float]:
        own = self._merged[node]
        if not self._root_boosts:
            return own
        return ChainMap(own, self._root_boosts) if own else self._root_boosts  # type: ignore[arg-type]

    def advance(self, state: GraphState, token: int) -> tuple[GraphState, float]:
        node = state.node
        offered = self.boosts_at(node).get(token, 0.0)
        child = self._children[node].get(token)
        if child is not None:
            target = state.at_risk + offered
        else:
            child = 0
            if token in self._tokens:
                suffix = self._fail[node]
                while True:
                    found = self._children[suffix].get(token)
                    if found is not None:
                        child = found
                        break
                    if suffix == 0:
                        break
                    suffix = self._fail[suffix]
            # The suffix match deserves its own path score, but never more than was actually granted:
            # part of it may already be banked by a phrase that just completed. Corrections are <= 0.
            target = min(self._score[child], state.at_risk + offered)
        correction = target - state.at_risk - offered
        done = self._outputs[child]
        if child == 0 and not state.at_risk:
            return self._start, correction
        return GraphState(self, child, 0.0 if done else target, done), correction


def compile_graph(
    phrases: Iterable[WeightedPhrase],
    encode: Encode,
    decode: Decode,
    *,
    first_piece_boost: float = 0.0,
    max_tokens: int = 24,
    prompt_max_chars: int = 200,
) -> tuple[BiasGraph, list[TokenizationIssue]]:
    """Compile phrases (given in prompt priority order) into a graph; phrases the tokenizer cannot carry
    are left out and returned."""
    began = time.perf_counter()
    children: list[dict[int, int]] = [{}]
    edge: list[float] = [0.0]
    depth: list[int] = [0]
    ends: list[list[str]] = [[]]
    kept: list[str] = []
    groups: list[str] = []
    issues: list[TokenizationIssue] = []
    for item in phrases:
        issue = check_phrase(item.phrase, encode, decode, max_tokens)
        if issue is not None:
            issues.append(issue)
            continue
        kept.append(item.phrase)
        groups.append(item.group)
        for ids in phrase_variants(item.phrase, encode, decode):
            if len(ids) > max_tokens:
                continue
            node = 0
            for token in ids:
                nxt = children[node].get(token)
                boost = first_piece_boost if depth[node] == 0 else item.boost
                if nxt is None:
                    nxt = len(children)
                    children[node][token] = nxt
                    children.append({})
                    edge.append(boost)
                    depth.append(depth[node] + 1)
                    ends.append([])
                elif boost > edge[nxt]:
                    edge[nxt] = boost
                node = nxt
            if item.phrase not in ends[node]:
                ends[node].append(item.phrase)

    count = len(children)
    fail = [0] * count
    score = [0.0] * count
    outputs: list[tuple[str, ...]] = [()] * count
    merged: list[Mapping[int, float]] = [_EMPTY] * count
    order: deque[int] = deque()
    for child in children[0].values():
        score[child] = edge[child]
        outputs[child] = tuple(ends[child])
        order.append(child)
    while order:
        node = order.popleft()
        for token, child in children[node].items():
            suffix = fail[node]
            while token not in children[suffix] and suffix != 0:
                suffix = fail[suffix]
            target = children[suffix].get(token, 0)
            fail[child] = target
            score[child] = score[node] + edge[child]
            outputs[child] = tuple(dict.fromkeys(ends[child] + list(outputs[fail[child]])))
            order.append(child)
        # Boosts offered at `node`: its own continuations, then those of its failure chain (a shorter
        # partial match); nodes without children share their suffix's mapping.
        own = {token: edge[child] for token, child in children[node].items() if edge[child] > 0}
        inherited = merged[fail[node]] if fail[node] != 0 else _EMPTY
        if own:
            merged[node] = MappingProxyType({**inherited, **own})
        else:
            merged[node] = inherited
    root_boosts = MappingProxyType({token: edge[child] for token, child in children[0].items() if edge[child] > 0})
    prompt = _prompt(kept, groups, prompt_max_chars)
    graph = BiasGraph(
        children, fail, score, outputs, merged, root_boosts, tuple(kept), prompt, time.perf_counter() - began
    )
    return graph, issues


def _prompt(phrases: Sequence[str], groups: Sequence[str], max_chars: int) -> str:
    """Whole lists, in order, while they fit: a few names picked from a long catalogue only skew the
    decoder towards those few, and cost every decode the prompt's length (the graph and the post-pass
    cover every phrase either way)."""
    parts: list[str] = []
    length = 0
    for _, members in groupby(zip(groups, phrases, strict=True), key=lambda pair: pair[0]):
        names = [phrase for _, phrase in members]
        extra = sum(len(name) for name in names) + 2 * (len(names) - (0 if parts else 1))
        if length + extra > max_chars:
            break
        parts += names
        length += extra
    return ", ".join(parts)
