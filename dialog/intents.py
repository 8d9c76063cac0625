"""Intent recognition from a transcript: weighted phrase rules, fuzzy word matching, slot filling.

Rules are keyword/phrase weights per intent. Single words also match fuzzily (rapidfuzz) so that ASR
misspellings ("cancell", "representitive") still count; when no rule fires, the transcript is compared
with example requests as a last resort. Products and other entities named in the flow are found
fuzzily too, and "the same one"/"it" is resolved from what the caller named earlier in the call.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

from rapidfuzz import fuzz, process

from dialog.grammars import answer, normalize, parse_digits, yes_no

# Intents the recognizer can return; flows may only branch on these.
IntentName = Literal[
    "billing", "tech_support", "sales", "account", "cancel", "agent", "yes", "no", "digits", "repeat", "back"
]
FLOW_INTENTS: frozenset[str] = frozenset(get_args(IntentName))
GLOBAL_INTENTS = frozenset({"repeat", "back"})

_RULES: dict[str, dict[str, float]] = {
    "billing": {
        "bill": 2, "bills": 2, "billing": 2, "billed": 2, "charged": 2, "charge": 1.5, "charges": 1.5,
        "overcharged": 2.5, "invoice": 2, "payment": 2, "payments": 2, "pay": 1.5, "paying": 1.5,
        "balance": 1.5, "refund": 2, "statement": 1, "fee": 1.5, "fees": 1.5, "due date": 2,
        "direct debit": 2, "too much": 1, "charged twice": 1,
    },
    "tech_support": {
        "not working": 2.5, "does not work": 2.5, "stopped working": 2.5, "broken": 2, "dropping": 2,
        "drops": 2, "dropped": 1.5, "connection": 1.5, "internet": 1.5, "wifi": 1.5, "wi fi": 1.5,
        "outage": 2, "slow": 1.5, "error": 1.5, "signal": 1.5, "no service": 2, "can not make": 2,
        "can not connect": 2.5, "can not get": 1, "fix": 1.5, "problem": 1, "issue": 1, "trouble": 1.5,
        "technical": 2, "support": 1, "reset": 1.5, "restart": 1.5, "cuts out": 2, "keeps": 0.5,
        "calls": 0.5, "offline": 2, "frozen": 1.5, "crashes": 1.5, "turn on": 1.5, "will not": 1,
        "is down": 2, "no internet": 2.5, "not loading": 2,
    },
    "sales": {
        "buy": 2, "purchase": 2, "upgrade": 2.5, "new phone": 1.5, "new plan": 1.5, "sign up": 2,
        "order": 1.5, "deal": 1.5, "deals": 1.5, "offer": 1.5, "offers": 1.5, "price": 1.5,
        "pricing": 1.5, "how much": 1, "subscribe": 1.5, "new line": 1.5, "add a line": 1.5,
        "interested in": 1.5, "plan": 0.5, "promotion": 1.5,
    },
    "account": {
        "account": 1, "my account": 0.5, "to my account": 1, "address": 2, "password": 2,
        "change my": 1, "update my": 1.5, "login": 2, "log in": 2, "username": 2, "email": 1.5,
        "personal details": 2, "details": 1, "profile": 2, "pin": 1.5, "add": 1, "forgot": 1.5,
        "locked out": 2, "security question": 2, "phone number": 1, "name": 0.5,
    },
    "cancel": {
        "cancel": 3, "cancellation": 3, "cancelling": 3, "canceling": 3, "close my account": 3,
        "close my": 2, "close": 1.5, "terminate": 3, "end my": 2, "stop my": 2, "disconnect": 2,
        "unsubscribe": 3, "get rid of": 2, "quit": 1.5, "switch provider": 2,
    },
    "agent": {
        "agent": 3, "representative": 3, "real person": 3, "human": 3, "person": 1.5, "operator": 3,
        "talk to": 1.5, "speak to": 1.5, "speak with": 1.5, "talk with": 1.5, "someone": 1,
        "somebody": 1, "customer service": 2, "live": 0.5,
    },
    "repeat": {
        "repeat": 3, "say that again": 3, "say again": 2.5, "again": 1.5, "did not catch": 3,
        "did not hear": 2.5, "pardon": 2.5, "come again": 2.5, "one more time": 2.5,
        "what was that": 2.5, "what did you say": 3,
    },
    "back": {
        "go back": 3, "back": 2, "previous": 2.5, "main menu": 2.5, "start over": 2.5, "return": 1.5,
        "last menu": 2.5, "menu": 1, "beginning": 1.5,
    },
}  # fmt: skip


def command_words() -> tuple[str, ...]:
    """The words of the commands that work at every node ("say that again", "go back"): a closed
    grammar's decoding keeps them within reach."""
    return tuple(sorted({w for intent in GLOBAL_INTENTS for phrase in _RULES[intent] for w in phrase.split()}))


# Last-resort comparison when no rule fires at all.
_EXAMPLES: dict[str, tuple[str, ...]] = {
    "billing": ("i have a question about my bill", "why is my bill so high", "i want to make a payment"),
    "tech_support": ("my internet is not working", "i have no service", "my phone will not connect"),
    "sales": ("i want to buy a new phone", "i want to upgrade my plan", "what plans do you have"),
    "account": ("i need to change my address", "i forgot my password", "update my details"),
    "cancel": ("i want to cancel my service", "close my account", "end my contract"),
    "agent": ("let me talk to a real person", "representative please", "i want an agent"),
    "repeat": ("can you say that again", "please repeat that"),
    "back": ("go back to the main menu", "take me back"),
}
_EXAMPLE_CHOICES = [(intent, ex) for intent, exs in _EXAMPLES.items() for ex in exs]

_FUZZY_MIN_LEN = 5  # shorter words are too easily confused ("bill"/"fill")
_FUZZY_CUTOFF = 87.0
_EXAMPLE_CUTOFF = 80.0
_YES_NO_MAX_TOKENS = 6  # past this, "right"/"no" are words in a request, not an answer
_ANAPHORA = (("same", "one"), ("same", "thing"), ("the", "same"), ("that", "one"), ("this", "one"), ("it",))


@dataclass(frozen=True, slots=True)
class IntentResult:
    intent: str | None
    confidence: float
    slots: dict[str, str] = field(default_factory=dict)
    text: str = ""  # the normalized transcript


def _phrase_in(tokens: list[str], phrase: tuple[str, ...]) -> bool:
    n = len(phrase)
    return any(tuple(tokens[i : i + n]) == phrase for i in range(len(tokens) - n + 1))


class _Rule:
    __slots__ = ("phrase", "weight")

    def __init__(self, phrase: str, weight: float) -> None:
        self.phrase = tuple(phrase.split())
        self.weight = weight

    def score(self, tokens: list[str]) -> float:
        if _phrase_in(tokens, self.phrase):
            return self.weight
        if len(self.phrase) == 1 and len(self.phrase[0]) >= _FUZZY_MIN_LEN:
            best = process.extractOne(
                self.phrase[0],
                [t for t in tokens if len(t) >= _FUZZY_MIN_LEN - 1],
                scorer=fuzz.ratio,
                score_cutoff=_FUZZY_CUTOFF,
            )
            if best is not None:
                return self.weight * best[1] / 100.0
        return 0.0


_COMPILED = {intent: [_Rule(p, w) for p, w in rules.items()] for intent, rules in _RULES.items()}


def _confidence(best: float, second: float) -> float:
    """Grows with the winning score, shrinks as the runner-up closes in."""
    if best <= 0:
        return 0.0
    return (1.0 - math.exp(-best)) * (1.0 - 0.5 * second / best)


class IntentRecognizer:
    """Stateless recognizer; per-call memory is passed in (it lives in the call context).

    `entities` maps a slot name to the values the caller may name (e.g. product names).
    """

    def __init__(self, entities: Mapping[str, Sequence[str]] | None = None) -> None:
        self._entities = {
            slot: {" ".join(normalize(v)): v for v in values} for slot, values in (entities or {}).items()
        }

    def recognize(
        self,
        text: str,
        grammar: str = "free",
        candidates: Iterable[str] | None = None,
        memory: Mapping[str, str] | None = None,
    ) -> IntentResult:
        """Best intent among `candidates` (all intents when None) for `text` under `grammar`.

        `repeat` and `back` are always candidates: they work everywhere in a flow.
        """
        tokens = normalize(text)
        allowed = set(FLOW_INTENTS if candidates is None else candidates) | GLOBAL_INTENTS
        slots = self._slots(tokens, memory or {})
        norm = " ".join(tokens)
        if not tokens:
            return IntentResult(None, 0.0, slots, norm)
        scores = self._rule_scores(tokens, allowed)

        if grammar == "digits":
            parsed = parse_digits(tokens)
            if parsed.digits:
                slots["digits"] = parsed.digits
                # Commands win only when clearly stronger than digits ("go back" vs "one two three").
                if not scores or max(scores.values()) < 2.5 or parsed.digit_tokens >= 2:
                    share = parsed.digit_tokens / max(1, parsed.digit_tokens + parsed.other_tokens)
                    return IntentResult("digits", round(0.6 + 0.4 * share, 3), slots, norm)
        elif grammar == "yes_no":
            said = yes_no(tokens)
            if said is not None and not any(s >= 2.5 for i, s in scores.items() if i in GLOBAL_INTENTS):
                return IntentResult(said, 0.95 if len(tokens) <= _YES_NO_MAX_TOKENS else 0.7, slots, norm)
        else:
            self._add_closed_grammars(tokens, allowed, scores, slots)

        scores = {i: s for i, s in scores.items() if i in allowed and s > 0}
        if not scores:
            return self._by_example(norm, allowed, slots)
        ranked = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)
        best_intent, best = ranked[0]
        second = ranked[1][1] if len(ranked) > 1 else 0.0
        return IntentResult(best_intent, round(_confidence(best, second), 3), slots, norm)

    @staticmethod
    def _rule_scores(tokens: list[str], allowed: set[str]) -> dict[str, float]:
        scores: dict[str, float] = {}
        for intent, rules in _COMPILED.items():
            if intent in allowed:
                total = sum(rule.score(tokens) for rule in rules)
                if total > 0:
                    scores[intent] = total
        return scores

    @staticmethod
    def _add_closed_grammars(
        tokens: list[str], allowed: set[str], scores: dict[str, float], slots: dict[str, str]
    ) -> None:
        """In free speech, a string of digits or a short yes/no is an answer in its own right."""
        if "digits" in allowed:
            parsed = parse_digits(tokens)
            if parsed.digit_tokens >= 3:
                slots["digits"] = parsed.digits
                scores["digits"] = 3.0 + 0.25 * parsed.digit_tokens
        if len(tokens) <= _YES_NO_MAX_TOKENS:
            said = answer(tokens)
            if said is not None and said in allowed:
                scores[said] = scores.get(said, 0.0) + 2.5

    @staticmethod
    def _by_example(norm: str, allowed: set[str], slots: dict[str, str]) -> IntentResult:
        choices = [ex for intent, ex in _EXAMPLE_CHOICES if intent in allowed]
        owners = [intent for intent, _ in _EXAMPLE_CHOICES if intent in allowed]
        best = process.extractOne(norm, choices, scorer=fuzz.token_sort_ratio, score_cutoff=_EXAMPLE_CUTOFF)
        if best is None:
            return IntentResult(None, 0.0, slots, norm)
        # Capped below a rule hit: a resemblance is weaker evidence than a keyword.
        return IntentResult(owners[best[2]], round(0.7 * best[1] / 100.0, 3), slots, norm)

    def _slots(self, tokens: list[str], memory: Mapping[str, str]) -> dict[str, str]:
        slots: dict[str, str] = {}
        for slot, values in self._entities.items():
            found = self._find_entity(tokens, values)
            if found is not None:
                slots[slot] = found
            elif slot in memory and any(_phrase_in(tokens, a) for a in _ANAPHORA):
                slots[slot] = memory[slot]
        return slots

    @staticmethod
    def _find_entity(tokens: list[str], values: Mapping[str, str]) -> str | None:
        """The entity value whose words best match a span of the transcript (ASR may garble them)."""
        best_value, best_score = None, 0.0
        for norm_value, value in values.items():
            width = len(norm_value.split())
            target = norm_value.replace(" ", "")
            for w in {max(1, width - 1), width, width + 1}:
                for i in range(len(tokens) - w + 1):
                    score = fuzz.ratio(target, "".join(tokens[i : i + w]))
                    if score > best_score:
                        best_value, best_score = value, score
        return best_value if best_score >= 80.0 else None
