"""Paired comparisons in interleaved rounds, in one process: verdicts that survive the machine's noise.

The generation table times each backend once, in its own process, minutes apart; on a shared 2-core machine the
same ratio read 1.00, 1.08 and 1.10 in three runs. Here every compared path is loaded in **one** process and timed
in ``rounds`` rounds; in each round every path runs the same sentences, in an order that rotates from round to
round. A ratio is taken inside each round (path / CTranslate2 of that round), and a target is

* **met** when even the round with the smallest ratio clears it,
* **missed** when even the largest ratio falls short,
* **undecided** otherwise (the spread straddles the line),

with the median and min-max reported beside it (``bench/report.py``).

Paths (``spec["paths"]``, each at the batch sizes in ``spec["batches"]``):

* ``ct2-direct``: CTranslate2's ``translate_batch`` on pre-tokenised input, its best thread layout per round
  (every layout of :func:`bench.generation.ct2_layouts` is timed in every round and the fastest kept);
* ``dynamic-int8``, ``torch-fp32``: llmdiet's backends (static-cache decoder) through ``backend.translate``;
* ``dynamic-int8+draft``: speculative decoding (batch 1), the draft being the student shape's dynamic-int8
  artifact proposing its own tokens (random weights: almost never accepted, i.e. the worst case);
* ``dynamic-int8+draft@0.7``: the same draft's and teacher's real forward passes, but each proposal counts as
  accepted with probability 0.7, a round's run ending at the first rejection (:class:`Acceptance`): speculative
  decoding at a controlled per-token agreement (random-init shapes never agree, and an int8 teacher's verification
  chunks flip near-tied random logits). The measured acceptance (accepted / proposed) is recorded per path: below
  a, since the proposals after a rejection are wasted.

Worker spec::

    {"shape": "flan-t5-large", "tokenizer_dir": DIR, "rounds": 5, "source_tokens": 40, "new_tokens": 40,
     "dirs": {"dynamic-int8": DIR, "torch-fp32": DIR, "ct2-direct": DIR, "draft": DIR},
     "paths": {"1": ["ct2-direct", "dynamic-int8", "dynamic-int8+draft@0.7"], "16": ["ct2-direct", "dynamic-int8"]},
     "sentences": {"1": 2, "16": 16}}
"""

from __future__ import annotations

import gc
import statistics
import time

from .jobs import worker_main


def verdict(ratios: list[float], required: float) -> str:
    """met / missed / undecided for a ``>= required`` target from per-round ratios."""
    if min(ratios) >= required:
        return "met"
    if max(ratios) < required:
        return "missed"
    return "undecided"


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


class Acceptance:
    """Sets how many leading draft proposals are accepted: each independently with probability ``alpha`` (the
    per-token agreement of a draft with its teacher), the run ending at the first rejection."""

    def __init__(self, alpha: float, seed: int = 0):
        import torch

        self.alpha = alpha
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, k: int, batch: int):
        import torch

        hits = (torch.rand((batch, k), generator=self.generator) < self.alpha).long()
        return hits.cumprod(dim=1).sum(dim=1)


def _ct2(spec: dict, cores: int):
    import ctranslate2

    from .generation import ct2_layouts

    translators = {}
    for batch in spec["paths"]:
        for intra, inter in ct2_layouts(int(batch), cores):
            if (intra, inter) not in translators:
                translators[(intra, inter)] = ctranslate2.Translator(
                    spec["dirs"]["ct2-direct"],
                    device="cpu",
                    compute_type="int8",
                    inter_threads=inter,
                    intra_threads=intra,
                )
    return translators


def run(spec: dict) -> dict:
    import torch

    from llmdiet.engines import GenerationSettings, load_backend
    from llmdiet.provenance import available_cores

    from .generation import ct2_layouts
    from .workload import fixed_length_sources, load_tokenizer

    cores = spec.get("threads") or available_cores()
    torch.set_num_threads(cores)
    tokenizer = load_tokenizer(spec["tokenizer_dir"])
    new = spec.get("new_tokens", 40)
    settings = GenerationSettings(max_new_tokens=new, min_new_tokens=new, num_beams=1)
    most = max(spec["sentences"].values())
    sources = fixed_length_sources(tokenizer, most, spec.get("source_tokens", 40))
    token_lists = [tokenizer.convert_ids_to_tokens(x) for x in tokenizer(sources)["input_ids"]]
    all_paths = sorted({p for paths in spec["paths"].values() for p in paths})

    backends: dict = {}
    for path in all_paths:
        name, _, variant = path.partition("+")
        if name == "ct2-direct" or name in backends:
            continue
        backends[name] = load_backend(name, spec["dirs"][name], device="cpu")
        if any(p.startswith(f"{name}+draft") for p in all_paths):
            backends[f"{name}+draft"] = load_backend(
                name, spec["dirs"][name], device="cpu", draft=spec["dirs"]["draft"]
            )
    translators = _ct2(spec, cores) if "ct2-direct" in all_paths else {}

    acceptances = {
        path: Acceptance(float(path.split("@")[1]), seed=k) for k, path in enumerate(all_paths) if "@" in path
    }

    def time_path(path: str, batch: int, count: int) -> tuple[float, dict | None]:
        rows = list(range(count))
        groups = [rows[i : i + batch] for i in range(0, count, batch)]
        if path == "ct2-direct":
            best = 0.0
            for layout in ct2_layouts(batch, cores):
                translator = translators[layout]
                split = -(-batch // layout[1]) if layout[1] > 1 else 0
                start = time.perf_counter()
                produced = 0
                for group in groups:
                    results = translator.translate_batch(
                        [token_lists[i] for i in group],
                        beam_size=1,
                        max_batch_size=split,
                        max_decoding_length=new,
                        min_decoding_length=new,
                        max_input_length=0,
                        return_end_token=True,
                    )
                    produced += sum(len(r.hypotheses[0]) for r in results)
                best = max(best, produced / (time.perf_counter() - start))
            return best, None
        backend = backends[path.split("@")[0]]
        if backend.speculative is not None:
            backend.speculative.accept = acceptances.get(path)
        start = time.perf_counter()
        produced = 0
        for group in groups:
            produced += sum(t.generated_tokens for t in backend.translate([sources[i] for i in group], settings))
        wall = time.perf_counter() - start
        stats = backend.decoding_stats() if backend.speculative is not None else None
        return produced / wall, stats

    # warm-up: every path once, untimed
    for batch, paths in spec["paths"].items():
        for path in paths:
            time_path(path, int(batch), min(int(batch), spec["sentences"][batch]))

    measured: dict = {batch: {p: [] for p in paths} for batch, paths in spec["paths"].items()}
    acceptance: dict = {}
    started = time.perf_counter()
    for round_index in range(spec.get("rounds", 5)):
        for batch, paths in spec["paths"].items():
            order = paths[round_index % len(paths) :] + paths[: round_index % len(paths)]  # rotate the order
            for path in order:
                tps, stats = time_path(path, int(batch), spec["sentences"][batch])
                measured[batch][path].append(tps)
                if stats:
                    acceptance.setdefault(path, []).append(stats["acceptance_rate"])
        gc.collect()
    out: dict = {"shape": spec["shape"], "rounds": spec.get("rounds", 5), "cores": cores, "by_batch": {}}
    for batch, paths in measured.items():
        entry: dict = {"sentences": spec["sentences"][batch], "tokens_per_s": {}, "ratio_vs_ct2": {}}
        for path, values in paths.items():
            entry["tokens_per_s"][path] = spread(values)
            if path != "ct2-direct" and "ct2-direct" in paths:
                entry["ratio_vs_ct2"][path] = spread([v / c for v, c in zip(values, paths["ct2-direct"])])
        out["by_batch"][batch] = entry
    out["acceptance_rate"] = {p: spread([a for a in v if a is not None] or [0.0]) for p, v in acceptance.items()}
    out["timed_s"] = time.perf_counter() - started
    out["ct2_isa"] = _ct2_isa()
    return out


def _ct2_isa() -> dict:
    """CTranslate2's CPU switches as this process saw them (the defaults were measured best: bench/ct2_settings.py)."""
    import os

    import ctranslate2

    return {
        "version": ctranslate2.__version__,
        "CT2_FORCE_CPU_ISA": os.environ.get("CT2_FORCE_CPU_ISA"),
        "CT2_USE_MKL": os.environ.get("CT2_USE_MKL"),
        "supported_compute_types_cpu": sorted(ctranslate2.get_supported_compute_types("cpu")),
    }


if __name__ == "__main__":
    raise SystemExit(worker_main(run))
