"""Prometheus metrics of the hot-word package."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HITS = Counter("voicenav_hotwords_hits_total", "Hot phrases recognized, per list and phrase", ["list", "phrase"])
GRAPH_NODES = Gauge("voicenav_hotwords_graph_nodes", "Nodes of the compiled biasing graph of a list", ["list"])
COMPILE_SECONDS = Histogram(
    "voicenav_hotwords_compile_seconds",
    "Time to compile a biasing graph",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
REJECTED = Counter(
    "voicenav_hotwords_rejected_total",
    "Rejected uploads (or phrases left out of an upload), by reason",
    ["reason"],
)
RELOADS = Counter("voicenav_hotwords_reloads_total", "Lists (re)loaded by a replica registry", ["cause"])
SYNC_ERRORS = Counter(
    "voicenav_hotwords_resync_errors_total",
    "Failures to follow hot-word changes (store unreachable, bad record), by where they happened",
    ["source"],
)
