"""What a shorter end-of-speech pause would cost: recorded speech through the VAD at each pause, and
for every utterance a pause would cut, whether the dialog would act on the part before the cut (the
caller still talking: a wrong answer) or ask again. Two sets: callers_dev (synthetic caller requests)
and asterisk_dev (Allison's recorded prompts: a human voice, with the pauses of read sentences).

    .venv/bin/python -m bench.endpointing [--pauses 300 400 500 600] [--halves tuning] [--tail-margins none 10]

Each set is split into its tuning and validation halves (`bench/splits.py`): choose a pause on the
tuning half, report the validation half.

Each utterance is fed as a caller sends it (8 kHz, then 2 s of silence). A cut utterance's first
part is decoded (tiny.en, the main menu's hot-word prompt left out) and judged by the demo flow's
main menu: an intent it routes on with enough confidence is "acted on". Deciding at a pause and
acting only if the caller stays silent until the usual pause turns the acted-on cuts back into
waits; the others cost a re-prompt unless the turn waits for the whole pause. With `--tail-margins`
each pause is run at each `vad.tail_margin_db` ("none": Silero alone); "last voiced_end" is where the
last utterance's voice ended, from the start of the clip: the earlier, the sooner the turn's wait
starts.
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


def segments(vad: SileroVad, pcm16k: np.ndarray, config: VadConfig) -> list[SpeechEnd]:
    endpointer = Endpointer(vad, config)
    x = np.concatenate([pcm16k, np.zeros(2 * RATE, np.float32)])
    return [e for e in endpointer.accept(x) if isinstance(e, SpeechEnd)]


def as_caller_sends(clip: Clip) -> np.ndarray:
    """The clip at 8 kHz int16 (as the line carries it), then at the VAD's 16 kHz."""
    pcm = np.clip(np.asarray(clip.audio.samples) * 32768, -32768, 32767).astype(np.int16)
    if clip.audio.sample_rate != 8000:
        pcm = resample_int16(pcm, clip.audio.sample_rate, 8000)
    return resample_int16(pcm, 8000, RATE).astype(np.float32) / 32768


def measure(audio: list[np.ndarray], config: VadConfig, vad: SileroVad, recognizer: Recognizer) -> list[str]:
    flow = load_demo_flow()
    menu = flow.nodes[flow.start]
    intents = IntentRecognizer(flow.entities)
    cut, acted, waits, voiced_ends = 0, 0, [], []
    for pcm in audio:
        ends = segments(vad, pcm, config)
        if not ends:
            continue
        waits.append(ends[-1].decided_at - ends[-1].voiced_end)
        voiced_ends.append(ends[-1].voiced_end)
        if len(ends) < 2:
            continue
        cut += 1
        first = recognizer.recognize([Utterance(ends[0].samples, RATE, None, "")])[0].text
        result = intents.recognize(first, menu.grammar, set(menu.intents), {})
        acted += result.intent in menu.intents and result.confidence >= flow.settings.min_confidence
    wait = f"{np.mean(waits) * 1000:.0f}" if waits else "nan"
    voiced_end = f"{np.mean(voiced_ends) * 1000:.0f}" if voiced_ends else "nan"
    margin = "none" if config.tail_margin_db is None else f"{config.tail_margin_db:g}"
    return [str(config.min_silence_ms), margin, str(len(audio)), str(cut), str(acted), wait, voiced_end]


def margin(text: str) -> float | None:
    return None if text == "none" else float(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pauses", type=int, nargs="+", default=[300, 400, 500, 600], help="pauses to try, ms")
    ap.add_argument("--halves", nargs="+", choices=HALVES, default=list(HALVES), help="halves of each set to run")
    ap.add_argument(
        "--tail-margins",
        type=margin,
        nargs="+",
        default=[VadConfig().tail_margin_db],
        help="vad.tail_margin_db values to try, dB ('none': off)",
    )
    args = ap.parse_args()
    vad = SileroVad()
    recognizer = Recognizer(RecognizerConfig(engine=EngineConfig(cache_dir=MODEL_CACHE)))
    rows = []
    for name, clips in (("callers_dev", caller_clips()), ("asterisk_dev", asterisk_clips())):
        halves = split(clips)
        for half in args.halves:
            audio = [as_caller_sends(c) for c in halves[half]]
            rows += [
                [name, half, *measure(audio, VadConfig(min_silence_ms=pause, tail_margin_db=m), vad, recognizer)]
                for pause in args.pauses
                for m in args.tail_margins
            ]
    headers = [
        "set",
        "half",
        "pause ms",
        "tail margin dB",
        "utterances",
        "cut mid-utterance",
        "cut and acted on",
        "mean wait after voice ms",
        "mean last voiced_end ms",
    ]
    print(table(headers, rows))


if __name__ == "__main__":
    main()
