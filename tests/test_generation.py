"""generate_all: batching order, warm-up excluded from timing, honest numbers, memory peak."""

from __future__ import annotations

import time

import numpy as np
import psutil
import pytest

from llmdiet.engines import GenerationSettings, Translation, TranslationBackend
from llmdiet.evaluation.generation import PeakRSSMonitor, generate_all, plan_batches, source_lengths

SETTINGS = GenerationSettings(max_new_tokens=8)
SOURCES = ["a b", "a much longer source sentence here", "mid size one", "x", "another fairly long one", "tiny", "z z z"]


class RecordingBackend(TranslationBackend):
    """Uppercases its input; records every batch; optional delays to make timing testable."""

    name = "recording"

    def __init__(self, first_call_s: float = 0.0, per_call_s: float = 0.0, allocate_bytes: int = 0):
        self.calls: list[list[str]] = []
        self.first_call_s, self.per_call_s, self.allocate_bytes = first_call_s, per_call_s, allocate_bytes

    def translate(self, sources, settings):
        time.sleep(self.first_call_s if not self.calls else self.per_call_s)
        if self.allocate_bytes:
            block = np.ones(self.allocate_bytes, dtype=np.uint8)  # touched pages count in RSS
            time.sleep(0.2)
            del block
        self.calls.append(list(sources))
        return [Translation(s.upper(), len(s.split())) for s in sources]

    def size_info(self):
        return {"parameters": 0, "disk_bytes": 0, "memory_bytes": 0}

    def describe(self):
        return {"backend": self.name, "device": "cpu"}


def test_translations_come_back_in_original_order_and_batches_go_longest_first():
    backend = RecordingBackend()
    seen = []
    result = generate_all(
        backend,
        SOURCES,
        SETTINGS,
        batch_size=3,
        warmup_batches=1,
        on_batch=lambda idx, tr: seen.append((idx, [t.hypothesis for t in tr])),
        progress=False,
    )
    assert [t.hypothesis for t in result.translations] == [s.upper() for s in SOURCES]
    by_length = sorted(SOURCES, key=len, reverse=True)  # no tokenizer here: character length
    assert result.sorted_by == "chars"
    assert backend.calls[0] == by_length[:3]  # the warm-up batch is the worst case...
    assert sum(backend.calls[1:], []) == by_length  # ...and then every batch is timed, longest first
    assert result.num_batches == 3 and len(result.batch_latencies_s) == 3
    # on_batch gets indices into the original list with their translations
    assert sorted(i for idx, _ in seen for i in idx) == list(range(len(SOURCES)))
    for idx, hyps in seen:
        assert hyps == [SOURCES[i].upper() for i in idx]
    assert result.generated_tokens == sum(len(s.split()) for s in SOURCES)


def test_warmup_is_excluded_from_timing_and_rates_are_consistent():
    backend = RecordingBackend(first_call_s=1.0, per_call_s=0.02)  # the first call pays a one-off cost
    result = generate_all(backend, SOURCES, SETTINGS, batch_size=2, warmup_batches=1, progress=False)
    assert result.warmup_s >= 1.0
    assert result.wall_s < 1.0 and len(backend.calls) == 1 + result.num_batches
    assert all(0.02 <= t < 1.0 for t in result.batch_latencies_s)
    assert result.wall_s >= sum(result.batch_latencies_s)
    assert result.sentences_per_s == pytest.approx(len(SOURCES) / result.wall_s)
    assert result.tokens_per_s == pytest.approx(result.generated_tokens / result.wall_s)
    assert result.latency_p50_s == pytest.approx(float(np.percentile(result.batch_latencies_s, 50)))
    assert result.latency_p95_s == pytest.approx(float(np.percentile(result.batch_latencies_s, 95)))
    timing = result.timing_dict()
    assert "translations" not in timing and timing["warmup_batches"] == 1 and timing["peak_gpu_bytes"] is None
    assert timing["torch_threads"] >= 1 and timing["device"] == "cpu"


def test_without_warmup_or_sorting():
    backend = RecordingBackend()
    result = generate_all(
        backend, SOURCES, SETTINGS, batch_size=3, warmup_batches=0, sort_by_length=False, progress=False
    )
    assert backend.calls == [SOURCES[0:3], SOURCES[3:6], SOURCES[6:]]
    assert result.sorted_by == "none" and result.warmup_batches == 0


def test_empty_input_gives_an_empty_result():
    result = generate_all(RecordingBackend(), [], SETTINGS, batch_size=4, progress=False)
    assert result.translations == [] and result.num_batches == 0 and result.latency_p50_s is None


def test_plan_batches_is_stable_and_checks_batch_size():
    assert plan_batches([3, 5, 3, 5, 1], 2) == [[1, 3], [0, 2], [4]]
    assert plan_batches([3, 5, 3], 2, sort_by_length=False) == [[0, 1], [2]]
    with pytest.raises(ValueError, match="batch_size"):
        plan_batches([1], 0)


def test_peak_rss_sees_memory_allocated_during_generation():
    baseline = psutil.Process().memory_info().rss
    result = generate_all(
        RecordingBackend(allocate_bytes=300 * 2**20),
        ["a", "b"],
        SETTINGS,
        batch_size=1,
        warmup_batches=0,
        progress=False,
    )
    assert result.peak_rss_bytes - baseline > 200 * 2**20
    assert result.lifetime_peak_rss_bytes >= result.peak_rss_bytes - 16 * 2**20
    with PeakRSSMonitor() as monitor:
        pass
    assert monitor.peak > 0


def test_gpu_backends_get_synchronised_timing_and_peak_gpu_memory(monkeypatch):
    """The CUDA branch, with torch.cuda stubbed (no GPU here): peak memory is read after a reset."""
    import torch

    events = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: events.append("sync"))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda *a: events.append("reset"))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a: 123_456_789)

    class GpuBackend(RecordingBackend):
        def describe(self):
            return {"backend": "recording", "device": "cuda:0"}

    result = generate_all(GpuBackend(), SOURCES, SETTINGS, batch_size=4, progress=False)
    assert result.peak_gpu_bytes == 123_456_789 and result.device == "cuda:0"
    assert events == ["sync", "reset", "sync", "sync"]  # after warm-up: sync + reset; then one sync per timed batch


def test_real_model_sorts_by_tokens_and_batching_matches_one_by_one(demo_assets):
    from llmdiet.engines import load_backend

    backend = load_backend("torch-fp32", str(demo_assets.teacher))
    sources = [
        "translate English to French: " + s
        for s in ["The farmers buy bread today.", "My sister reads.", "The teacher buys a new car on Sundays."]
    ]
    lengths, unit = source_lengths(backend, sources)
    assert unit == "tokens" and lengths == [len(backend.tokenizer(s)["input_ids"]) for s in sources]
    result = generate_all(backend, sources, SETTINGS, batch_size=1, progress=False)
    assert [t.hypothesis for t in result.translations] == [
        backend.translate([s], SETTINGS)[0].hypothesis for s in sources
    ]
    assert all(0 < t.generated_tokens <= SETTINGS.max_new_tokens for t in result.translations)
    assert result.sorted_by == "tokens"
