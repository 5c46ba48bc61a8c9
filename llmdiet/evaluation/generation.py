"""Batched generation with honest timing: the one code path shared by ``llmdiet eval`` and the benchmarks.

:func:`generate_all` translates a list of already-prefixed sources with any
:class:`~llmdiet.engines.TranslationBackend`:

* **Batching.** Sources are sorted by length, longest first, then cut into batches of
  ``batch_size`` (:func:`plan_batches`). Length is the token count from the backend's
  ``tokenizer`` attribute when it has one, else the character count. Sorting limits padding;
  longest-first makes the first batch the worst case for memory, so an out-of-memory batch size
  fails at once instead of at the end. The sort is stable, so equal lengths keep their order and
  the plan is a pure function of (sources, batch size, tokenizer).
* **Warm-up.** The first ``warmup_batches`` batches of the plan are run once before timing starts
  and their output is thrown away; then *every* batch, those included, is run and timed. The timed
  numbers therefore cover all sentences, and none of them pays one-off costs (allocator growth,
  kernel selection, lazy initialisation).
* **Timing.** ``wall_s`` is the elapsed time of the timed loop (``time.perf_counter``), which also
  includes the ``on_batch`` callback (the harness appends samples to a file there: microseconds).
  ``batch_latencies_s`` time ``backend.translate`` alone, one entry per batch; p50/p95 are
  ``numpy.percentile`` (linear interpolation) over them. ``sentences_per_s`` and ``tokens_per_s``
  divide by ``wall_s``; generated tokens are counted by the backend (EOS included, padding and
  the decoder start token excluded).
* **First token.** Backends whose ``translate`` takes ``on_first_token`` (torch, ONNX at batch 1, CTranslate2 in
  greedy search) report when the batch's first token is chosen: ``first_token_p50_s`` (time-to-first-token,
  encoder included) and ``per_token_latency_p50_s`` (the rest of the batch's time over its longest output minus one).
* **Memory.** ``peak_rss_bytes`` is the highest resident set size of this process seen by a
  psutil polling thread (every 5 ms) from the start of warm-up to the end of generation; it
  includes the loaded model. Spikes shorter than the interval can be missed, so the process-lifetime
  peak from ``resource.getrusage`` (an upper bound that also covers model loading) is reported
  beside it. On CUDA, ``peak_gpu_bytes`` is ``torch.cuda.max_memory_allocated`` over the timed loop.
* **Order.** ``translations`` come back in the original order of ``sources``; ``on_batch`` gets,
  after each timed batch, the indices into ``sources`` and their translations, as they are produced.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import psutil

from llmdiet.engines import GenerationSettings, Translation, TranslationBackend

OnBatch = Callable[[list[int], list[Translation]], None]
RSS_POLL_INTERVAL_S = 0.005


# ----------------------------------------------------------------------------- batch plan


def source_lengths(backend: TranslationBackend, sources: Sequence[str]) -> tuple[list[int], str]:
    """Length of each source and the unit used: ``"tokens"`` (backend tokenizer) or ``"chars"``."""
    tokenizer = getattr(backend, "tokenizer", None)
    if callable(tokenizer):
        try:
            # verbose=False: no "Token indices sequence length is longer than ..." warning (truncation is counted
            # and reported by the caller, against --max_source_length, not the tokenizer's model_max_length)
            ids = tokenizer(list(sources), add_special_tokens=True, verbose=False)["input_ids"]
            return [len(x) for x in ids], "tokens"
        except Exception:  # a tokenizer with another calling convention: fall back to characters
            pass
    return [len(s) for s in sources], "chars"


def plan_batches(lengths: Sequence[int], batch_size: int, sort_by_length: bool = True) -> list[list[int]]:
    """Indices grouped into batches: by length descending (stable) when ``sort_by_length``, else in order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = list(range(len(lengths)))
    if sort_by_length:
        order.sort(key=lambda i: -lengths[i])  # list.sort is stable: ties keep their original order
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


# ----------------------------------------------------------------------------- memory


class PeakRSSMonitor:
    """Context manager: highest RSS of this process, polled by a background thread."""

    def __init__(self, interval_s: float = RSS_POLL_INTERVAL_S):
        self.interval_s = interval_s
        self._process = psutil.Process()
        self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="llmdiet-rss-monitor", daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> PeakRSSMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


def lifetime_peak_rss_bytes() -> int | None:
    """Peak RSS over the whole process life (``getrusage``; Linux reports KiB), or None where unavailable."""
    try:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak) if sys.platform == "darwin" else int(peak) * 1024
    except (ImportError, OSError):
        return None


def _cuda_device(backend: TranslationBackend) -> bool:
    device = str(backend.describe().get("device", "cpu"))
    if not device.startswith("cuda"):
        return False
    import torch

    return torch.cuda.is_available()


# ----------------------------------------------------------------------------- result


@dataclass
class GenerationResult:
    translations: list[Translation]  # in the original order of ``sources``
    batch_latencies_s: list[float]  # backend.translate time per timed batch
    wall_s: float
    sentences_per_s: float
    tokens_per_s: float
    latency_p50_s: float | None
    latency_p95_s: float | None
    peak_rss_bytes: int  # psutil polling, every RSS_POLL_INTERVAL_S, during warm-up + generation
    peak_gpu_bytes: int | None  # torch.cuda.max_memory_allocated over the timed loop; None on CPU
    num_sentences: int = 0
    generated_tokens: int = 0
    batch_size: int = 0
    num_batches: int = 0
    warmup_batches: int = 0
    warmup_s: float = 0.0
    sorted_by: str = "tokens"  # "tokens", "chars" or "none" (original order)
    torch_threads: int | None = None
    device: str = "cpu"
    lifetime_peak_rss_bytes: int | None = None
    # per timed batch: seconds from the call to the first generated token (None where the backend cannot tell),
    # and the median over batches of the time per later token ((latency - first token) / (longest output - 1))
    first_token_latencies_s: list = field(default_factory=list)
    first_token_p50_s: float | None = None
    per_token_latency_p50_s: float | None = None
    memory_method: str = field(
        default=f"psutil RSS polled every {RSS_POLL_INTERVAL_S * 1000:g} ms during warm-up and generation; "
        "lifetime_peak_rss_bytes from resource.getrusage (whole process, includes model loading)"
    )

    def timing_dict(self) -> dict:
        """Everything but the translations, JSON-ready (the ``timing`` block of results.json)."""
        out = asdict(self)
        del out["translations"]
        return out


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


class _BatchClock:
    """Times each batch: its latency, its first token (engines that report it) and the time per later token."""

    def __init__(self, backend: TranslationBackend):
        self.backend = backend
        self.on_gpu = _cuda_device(backend)
        self.hook = "on_first_token" in inspect.signature(backend.translate).parameters
        self.latencies: list[float] = []
        self.first_tokens: list[float | None] = []
        self.per_token: list[float] = []

    def warm_up(self, batches: list[list[str]], settings: GenerationSettings) -> float:
        """Run ``batches`` untimed (first-call costs); seconds spent. GPU peak memory counts from here on."""
        import torch

        start = time.perf_counter()
        for batch in batches:
            self.backend.translate(batch, settings)
        if self.on_gpu:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        return time.perf_counter() - start

    def translate(self, batch: list[str], settings: GenerationSettings) -> list[Translation]:
        import torch

        first: list[float] = []
        t0 = time.perf_counter()
        if self.hook:
            out = self.backend.translate(
                batch,
                settings,
                on_first_token=lambda first=first: first.append(time.perf_counter()) if not first else None,
            )
        else:
            out = self.backend.translate(batch, settings)
        if self.on_gpu:
            torch.cuda.synchronize()
        self.latencies.append(time.perf_counter() - t0)
        self.first_tokens.append(first[0] - t0 if first else None)
        longest = max((t.generated_tokens for t in out), default=0)
        if first and longest > 1:
            self.per_token.append((self.latencies[-1] - (first[0] - t0)) / (longest - 1))
        if len(out) != len(batch):
            raise RuntimeError(
                f"backend {self.backend.name} returned {len(out)} translations for a batch of {len(batch)}"
            )
        return out


def generate_all(
    backend: TranslationBackend,
    sources: list[str],
    settings: GenerationSettings,
    batch_size: int,
    *,
    sort_by_length: bool = True,
    warmup_batches: int = 1,
    on_batch: OnBatch | None = None,
    progress: bool = True,
) -> GenerationResult:
    """Translate ``sources`` (already prefixed) in batches; see the module docstring for what is timed."""
    import torch
    from tqdm.auto import tqdm

    lengths, sorted_by = source_lengths(backend, sources) if sort_by_length else ([0] * len(sources), "none")
    batches = plan_batches(lengths, batch_size, sort_by_length)
    clock = _BatchClock(backend)
    results: list[Translation | None] = [None] * len(sources)

    with PeakRSSMonitor() as rss:
        warmup_s = clock.warm_up([[sources[i] for i in b] for b in batches[: max(0, warmup_batches)]], settings)

        bar = tqdm(total=len(sources), desc="translating", unit="sent", disable=not progress, leave=False)
        start = time.perf_counter()
        for batch in batches:
            out = clock.translate([sources[i] for i in batch], settings)
            for i, translation in zip(batch, out):
                results[i] = translation
            if on_batch is not None:
                on_batch(list(batch), list(out))
            bar.update(len(batch))
        wall = time.perf_counter() - start
        bar.close()
    peak_gpu = int(torch.cuda.max_memory_allocated()) if clock.on_gpu else None
    latencies, first_tokens = clock.latencies, clock.first_tokens
    tokens = sum(t.generated_tokens for t in results if t is not None)
    return GenerationResult(
        translations=results,  # type: ignore[arg-type]
        batch_latencies_s=latencies,
        wall_s=wall,
        sentences_per_s=len(sources) / wall if wall > 0 else 0.0,
        tokens_per_s=tokens / wall if wall > 0 else 0.0,
        latency_p50_s=_percentile(latencies, 50),
        latency_p95_s=_percentile(latencies, 95),
        peak_rss_bytes=int(rss.peak),
        peak_gpu_bytes=peak_gpu,
        num_sentences=len(sources),
        generated_tokens=tokens,
        batch_size=batch_size,
        num_batches=len(batches),
        warmup_batches=min(max(0, warmup_batches), len(batches)),
        warmup_s=warmup_s,
        sorted_by=sorted_by,
        torch_threads=torch.get_num_threads(),
        device=str(backend.describe().get("device", "cpu")),
        lifetime_peak_rss_bytes=lifetime_peak_rss_bytes(),
        first_token_latencies_s=first_tokens,
        first_token_p50_s=_percentile([f for f in first_tokens if f is not None], 50),
        per_token_latency_p50_s=_percentile(clock.per_token, 50),
    )
