"""Prometheus metrics of the recognizer."""

from prometheus_client import Counter, Gauge, Histogram

ASR_LATENCY = Histogram(
    "voicenav_asr_latency_seconds",
    "Time from an utterance's submission to its transcript (queueing + encode + decode)",
    buckets=(0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0),
)
ASR_DECODE = Histogram(
    "voicenav_asr_decode_seconds",
    "Time from an utterance's admission to its decoded transcript (its encoding and the decoder steps it ran"
    " in, shared with the utterances beside it), by whether it was biased (hot words)",
    ["biased"],
    buckets=(0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0),
)
ASR_REFINE = Histogram(
    "voicenav_asr_refine_seconds",
    "Time a refine step (hot-word readings weighed on the audio) added to one utterance",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0),
)
ASR_BATCH = Histogram(
    "voicenav_asr_batch_size", "Utterances decoded together, at each decoder step", buckets=(1, 2, 4, 8, 16, 32, 64)
)
VAD_BATCH = Histogram(
    "voicenav_vad_batch_size",
    "Streams whose 32 ms chunks the VAD judged together, at each inference of the calls' VAD thread",
    buckets=(1, 2, 4, 8, 16, 32),
)
ASR_QUEUE = Gauge("voicenav_asr_queue_depth", "Utterances waiting for the recognizer worker")
ASR_REJECTED = Counter("voicenav_asr_rejected_total", "Utterances refused or failed", ["reason"])
ASR_AUDIO_SECONDS = Counter("voicenav_asr_audio_seconds_total", "Seconds of speech transcribed")
ASR_WORKER_RESTARTS = Counter(
    "voicenav_asr_worker_restarts_total",
    "Recognizer worker threads replaced, by why: crashed (an error outside a decode) or hung (watchdog)",
    ["reason"],
)
