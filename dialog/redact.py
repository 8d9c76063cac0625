"""What call records and logs may show of what the caller said or keyed.

Slot values a flow does not mark `storable` (account numbers, PINs) are caller data. While such a
value is collected, every keyed digit and every number word or numeral said is masked (keys arrive one
per event, so no digit of them may show); prompts that read the value back show its last two digits
only. Free speech elsewhere keeps its words, but long numerals in it (an account number said at the
main menu) keep only their last two digits, and so do logged prompt texts.

Who called is caller data too: `mask_caller` keeps enough of a number or address to tell calls apart.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

from dialog.flow import Flow
from dialog.grammars import normalize, number_tokens
from dialog.state import CallContext, Turn

KEEP = 2  # trailing digits left readable: enough to tell two calls apart, not to reuse the number
_LONG_NUMERAL = re.compile(r"\d(?:[\s-]?\d){3,}")  # four or more digits, maybe spaced or dashed
CALLER_KEEP = 4  # trailing digits of a caller's number left readable, as on a card receipt
# An optional scheme (sip:, sips:, tel:), the user part, then the host or parameters, which are kept.
_CALLER_URI = re.compile(r"(?P<scheme>(?:sips?|tel):)?(?P<user>[^@;]*)(?P<rest>[@;].*)?", re.IGNORECASE | re.DOTALL)


def mask(text: str, keep: int = KEEP, secret: Callable[[str], bool] = str.isdigit) -> str:
    """Every digit (every `secret` character) of `text` but the last `keep` replaced by `*`:
    "471922#" -> "****22#"."""
    total = sum(secret(c) for c in text)
    seen = 0
    out = []
    for c in text:
        if secret(c):
            seen += 1
            out.append(c if seen > total - keep else "*")
        else:
            out.append(c)
    return "".join(out)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def mask_caller(caller: str) -> str:
    """A caller's number, URI or address as records and logs show it by default.

    The user part of a number or URI keeps its last `CALLER_KEEP` digits ("sip:5551234567@gw" ->
    "sip:******4567@gw", "+15551234567" -> "+*******4567"); a user name without digits keeps its first
    character ("alice" -> "a****"); an IP address (a browser caller) keeps its last `KEEP` digits or hex
    characters. The host of a URI (the carrier or gateway) and its parameters stay. Masking a masked
    value changes nothing.
    """
    if _is_ip(caller):
        return mask(caller, KEEP, str.isalnum)  # IPv6 groups are hex: letters count as digits
    match = _CALLER_URI.fullmatch(caller)
    assert match is not None  # every part may be empty: any string matches
    user = match["user"]
    user = mask(user, CALLER_KEEP) if any(c.isdigit() for c in user) else user[:1] + "*" * (len(user) - 1)
    return f"{match['scheme'] or ''}{user}{match['rest'] or ''}"


def mask_spoken(text: str) -> str:
    """A transcript of a number being said, with every number word and numeral masked."""
    tokens = normalize(text)
    return " ".join("*" if secret else tok for tok, secret in zip(tokens, number_tokens(tokens), strict=True))


def mask_numerals(text: str) -> str:
    """Free text with its long numerals masked and everything else as it was."""
    return _LONG_NUMERAL.sub(lambda m: mask(m.group()), text)


def secret_slots(flow: Flow) -> frozenset[str]:
    """The slots whose values are caller data: collected and not marked `storable`."""
    return frozenset(n.collect.slot for n in flow.nodes.values() if n.collect is not None and not n.collect.storable)


def redact_turn(turn: Turn, flow: Flow, before: CallContext, after: CallContext) -> Turn:
    """`turn` as a record may keep it: the caller's data in it masked unless the flow stores it."""
    secrets = secret_slots(flow)
    node = flow.nodes.get(before.node) if before.node is not None else None
    if node is not None and node.collect is not None and node.collect.slot not in secrets:
        return turn  # the flow stores this node's value as it is
    collecting = node is not None and node.collect is not None
    values = {v for ctx in (before, after) for k, v in ctx.slots.items() if k in secrets and v}
    prompts = []
    for prompt in turn.prompts:
        for value in sorted(values, key=len, reverse=True):
            # Prompts read digits back one by one ("4 7 1 9"); mask that form and the plain one.
            prompt = prompt.replace(" ".join(value), " ".join(mask(value))).replace(value, mask(value))
        prompts.append(prompt)
    transcript = turn.transcript
    if transcript is not None:
        transcript = mask_spoken(transcript) if collecting else mask_numerals(transcript)
    dtmf = turn.dtmf
    if dtmf is not None and collecting and (not before.confirming or len(dtmf) > 1):
        # Keys arrive one event at a time: any digit left readable here would add up to the number.
        dtmf = mask(dtmf, keep=0)
    elif dtmf is not None and len(dtmf) > KEEP:
        dtmf = mask(dtmf)
    return turn.model_copy(update={"prompts": prompts, "transcript": transcript, "dtmf": dtmf})
