"""The peers kit's caller speech and IVR prompt for the WebRTC peer tests, and how well the IVR heard
the speech."""

from __future__ import annotations

from types import ModuleType
from typing import NamedTuple

import numpy as np
from webrtc_testkit import AUDIO, CallHarness, peers_common


class KitAudio(NamedTuple):
    common: ModuleType  # the kit's common.py: WAV I/O, resampling, correlation
    speech: np.ndarray
    speech_rate: int
    prompt: np.ndarray
    prompt_rate: int

    def speech_received(self, harness: CallHarness) -> tuple[float, int]:
        """Best correlation of the caller's speech with what the IVR received, and its lag, at 8 kHz."""
        rx = self.common.resample(harness.received, harness.rate, 8000)
        return self.common.best_correlation(self.common.resample(self.speech, self.speech_rate, 8000), rx)


def kit_audio() -> KitAudio:
    common = peers_common()
    speech, speech_rate = common.read_wav(str(AUDIO / "speech8k.wav"))
    prompt, prompt_rate = common.read_wav(str(AUDIO / "prompt8k.wav"))
    return KitAudio(common, speech, speech_rate, prompt, prompt_rate)
