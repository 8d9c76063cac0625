"""Shared by the benchmarks: the evaluation sets, text normalization, WER and tables."""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import jiwer
import numpy as np

from asr_engine.audio.wav import Audio, read_wav

from .numbers import canonical_numbers, numerals

ROOT = Path(__file__).resolve().parents[1]
# Converted models, shared with the tests (converting them again takes minutes).
MODEL_CACHE = Path(os.environ.get("VOICENAV_TEST_CACHE", ROOT / ".cache" / "test-models"))
ASTERISK = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
# Package asterisk-core-sounds-en: one `key: text` line per prompt of the sounds above.
ASTERISK_TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
_CONTRACTIONS = [
    (r"\bwon't\b", "will not"),
    (r"\bcan't\b", "can not"),
    (r"\bcannot\b", "can not"),
    (r"n't\b", " not"),
    (r"\blet's\b", "let us"),
    (r"\b(it|that|there|what|here)'s\b", r"\1 is"),
    (r"'re\b", " are"),
    (r"'ll\b", " will"),
    (r"'ve\b", " have"),
    (r"\bi'm\b", "i am"),
    (r"'d\b", " would"),
]
# Misspellings in the Asterisk transcripts that would count as errors of whoever spells it right.
_TRANSCRIPT_TYPOS = {"fourtieth": "fortieth"}
# callers_dev intents the demo flow routes at once: what the sipp-caller benchmarks' callers ask for.
QUEUE_INTENTS = {"billing", "tech_support", "sales", "cancel", "agent"}


def shared_dir() -> Path:
    for cand in (os.environ.get("VOICENAV_SHARED"), ROOT.parent / "shared", ROOT / "shared"):
        if cand and (Path(cand) / "data").is_dir():
            return Path(cand)
    raise SystemExit("speech data not found: set VOICENAV_SHARED or put shared/ beside the checkout")


def _expanded(text: str) -> str:
    t = text.lower().replace("-", " ")
    for pattern, repl in _CONTRACTIONS:
        t = re.sub(pattern, repl, t)
    return t


def _words(text: str) -> list[str]:
    t = re.sub(r"[^a-z0-9' ]+", " ", text)
    return [w.strip("'") for w in t.split() if w.strip("'")]


def normalize(text: str) -> str:
    """Lower case, contractions expanded, digits spelled out one by one, punctuation dropped."""
    return " ".join(_words(re.sub(r"\d", lambda m: f" {DIGITS[int(m.group())]} ", _expanded(text))))


def scoring_form(text: str) -> str:
    """What WER compares: `normalize`'s words, with every number in one form however it is written
    (`bench.numbers`), so that "twelve" and "12" score the same."""
    return " ".join(canonical_numbers(_words(numerals(_expanded(text)))))


def wer(refs: list[str], hyps: list[str]) -> float:
    pairs = [(scoring_form(r), scoring_form(h)) for r, h in zip(refs, hyps, strict=True)]
    refs_n = [r for r, _ in pairs if r]
    hyps_n = [h for r, h in pairs if r]
    return 100.0 * jiwer.wer(refs_n, hyps_n)


@dataclass
class Clip:
    set: str
    key: str
    audio: Audio
    text: str
    hotwords: list[str]


def asterisk_clips(limit: int | None = None) -> list[Clip]:
    """The prompts listed for development (`asterisk_dev.tsv`)."""
    rows = [line.split("\t") for line in (shared_dir() / "data/asterisk_dev.tsv").read_text().splitlines()]
    out = [Clip("asterisk", k, read_wav(str(ASTERISK / f"{k}.wav")), ref, []) for k, ref in rows]
    return out[:limit]


def asterisk_reference(text: str) -> str | None:
    """A prompt's transcript written as `asterisk_dev.tsv` writes it, or None for what that list
    leaves out: tones and silence (nothing left once bracketed notes go) and numerals in a name
    ("H.323", said as "H dot three two three" or "H three twenty-three"). A plain numeral ("500",
    "28.8") stays, its digits spelled one by one: scoring compares numbers by their digits
    (`bench.numbers`), so "five hundred" and "five zero zero" both match it."""
    t = re.sub(r"\[[^\]]*\]|\([^)]*\)|<[^>]*>", " ", text)
    if re.search(r"[a-z]\.\d", t, re.IGNORECASE):
        return None
    t = numerals(t.lower().replace("*", " star ").replace("#", " pound "))
    ref = normalize(" ".join(_TRANSCRIPT_TYPOS.get(w, w) for w in t.split()))
    return ref or None


def asterisk_heldout_clips(limit: int | None = None) -> list[Clip]:
    """Every English prompt with a transcript that `asterisk_dev.tsv` does not list: speech no
    setting was ever tuned on."""
    if not ASTERISK_TRANSCRIPTS.exists():
        raise SystemExit(f"{ASTERISK_TRANSCRIPTS} not found: install the asterisk-core-sounds-en package")
    dev = {line.split("\t")[0] for line in (shared_dir() / "data/asterisk_dev.tsv").read_text().splitlines()}
    out = []
    for line in gzip.decompress(ASTERISK_TRANSCRIPTS.read_bytes()).decode().splitlines():
        key, sep, text = line.partition(":")
        key = key.strip()
        wav = ASTERISK / f"{key}.wav"
        if not sep or line.startswith(";") or key in dev or not wav.exists():
            continue
        if (ref := asterisk_reference(text)) is not None:
            out.append(Clip("asterisk-heldout", key, read_wav(str(wav)), ref, []))
    return out[:limit]


def caller_clips(limit: int | None = None) -> list[Clip]:
    d = shared_dir() / "data/callers_dev"
    rows = [json.loads(line) for line in (d / "manifest.jsonl").read_text().splitlines()]
    return [Clip("callers", r["id"], read_wav(str(d / f"{r['id']}.wav")), r["text"], r["hotwords"]) for r in rows][
        :limit
    ]


def queue_utterances(manifest: dict[str, dict]) -> list[str]:
    """The callers_dev utterances (ids, sorted) whose intent is one of QUEUE_INTENTS."""
    return sorted(k for k, v in manifest.items() if v["intent"] in QUEUE_INTENTS)


def sipp_bench_parser(doc: str | None) -> argparse.ArgumentParser:
    """The argument parser of a benchmark that runs the service against sipp callers: the module's
    docstring as its help, and the recognizer's batch size."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-batch", type=int, default=8, help="utterances the recognizer decodes together")
    return ap


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


def table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells]
    return "\n".join([line, sep, *body])
