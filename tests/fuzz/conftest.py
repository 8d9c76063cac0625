"""Hypothesis settings for the parser fuzzers: short in CI, as long as asked on demand.

`VOICENAV_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest tests/fuzz` runs each property that many times.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "voicenav-fuzz",
    max_examples=int(os.environ.get("VOICENAV_FUZZ_EXAMPLES", "200")),
    deadline=None,  # a shared CI machine's pauses are not findings
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=os.environ.get("VOICENAV_FUZZ_EXAMPLES") is None,  # CI runs are reproducible
)
settings.load_profile("voicenav-fuzz")
