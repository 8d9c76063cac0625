"""What a shorter end-of-speech pause would cost: recorded speech through the VAD at each pause, and
for every utterance a pause would cut, whether the dialog would act on the part before the cut (the
caller still talking: a wrong answer) or ask again. Two sets: callers_dev (synthetic caller requests)
and asterisk_dev (Allison's recorded prompts: a human voice, with the pauses of read sentences).

    .venv/bin/python -m bench.endpointing [--pauses 300 400 500 600] [--halves tuning]

Each set is split into its tuning and validation halves (`bench/splits.py`): choose a pause on the
tuning half, report the validation half.

Each utterance is fed as a caller sends it (8 kHz, then 2 s of silence). A cut utterance's first
part is decoded (tiny.en, the main menu's hot-word prompt left out) and judged by the demo flow's
main menu: an intent it routes on with enough confidence is "acted on". Deciding at a pause and
acting only if the caller stays silent until the usual pause turns the acted-on cuts back into
waits; the others cost a re-prompt unless the turn waits for the whole pause.
"""

from __future__ import annotations

import argparse

import numpy as np

from asr_engine.audio.resample import resample_int16
from asr_engine.config import EngineConfig, RecognizerConfig
from asr_engine.recognizer import Recognizer, Utterance
from asr_engine.vad import RATE, Endpointer, SileroVad, SpeechEnd, VadConfig
from dialog.flow import load_demo_flow
from dialog.intents import IntentRecognizer

from .common import MODEL_CACHE, Clip, asterisk_clips, caller_clips, table
from .splits import HALVES, split


def segments(vad: SileroVad, pcm16k: np.ndarray, pause_ms: int) -> list[SpeechEnd]:
    endpointer = Endpointer(vad, VadConfig(min_silence_ms=pause_ms))
    x = np.concatenate([pcm16k, np.zeros(2 * RATE, np.float32)])
    return [e for e in endpointer.accept(x) if isinstance(e, SpeechEnd)]


def as_caller_sends(clip: Clip) -> np.ndarray:
    """The clip at 8 kHz int16 (as the line carries it), then at the VAD's 16 kHz."""
    pcm = np.clip(np.asarray(clip.audio.samples) * 32768, -32768, 32767).astype(np.int16)
    if clip.audio.sample_rate != 8000:
        pcm = resample_int16(pcm, clip.audio.sample_rate, 8000)
    return resample_int16(pcm, 8000, RATE).astype(np.float32) / 32768


def measure(audio: list[np.ndarray], pause: int, vad: SileroVad, recognizer: Recognizer) -> list[str]:
    flow = load_demo_flow()
    menu = flow.nodes[flow.start]
    intents = IntentRecognizer(flow.entities)
    cut, acted, waits = 0, 0, []
    for pcm in audio:
        ends = segments(vad, pcm, pause)
        if not ends:
            continue
        waits.append(ends[-1].decided_at - ends[-1].voiced_end)
        if len(ends) < 2:
            continue
        cut += 1
        first = recognizer.recognize([Utterance(ends[0].samples, RATE, None, "")])[0].text
        result = intents.recognize(first, menu.grammar, set(menu.intents), {})
        acted += result.intent in menu.intents and result.confidence >= flow.settings.min_confidence
    wait = f"{np.mean(waits) * 1000:.0f}" if waits else "nan"
    return [str(pause), str(len(audio)), str(cut), str(acted), wait]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pauses", type=int, nargs="+", default=[300, 400, 500, 600], help="pauses to try, ms")
    ap.add_argument("--halves", nargs="+", choices=HALVES, default=list(HALVES), help="halves of each set to run")
    args = ap.parse_args()
    vad = SileroVad()
    recognizer = Recognizer(RecognizerConfig(engine=EngineConfig(cache_dir=MODEL_CACHE)))
    rows = []
    for name, clips in (("callers_dev", caller_clips()), ("asterisk_dev", asterisk_clips())):
        halves = split(clips)
        for half in args.halves:
            audio = [as_caller_sends(c) for c in halves[half]]
            rows += [[name, half, *measure(audio, pause, vad, recognizer)] for pause in args.pauses]
    headers = [
        "set",
        "half",
        "pause ms",
        "utterances",
        "cut mid-utterance",
        "cut and acted on",
        "mean wait after voice ms",
    ]
    print(table(headers, rows))


if __name__ == "__main__":
    main()
