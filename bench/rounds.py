"""Paired comparisons in interleaved rounds: verdicts that survive the machine's noise.

The generation table times each backend once, in its own process, minutes apart; on a shared 2-core machine the
same ratio read 1.00, 1.08 and 1.10 in three runs. Here the compared paths stay loaded in **two engine processes**
for the whole comparison, one with llmdiet's torch paths and one with CTranslate2 alone (it never imports torch:
in one shared process llmdiet's int8 paths ran at half their speed next to CTranslate2's thread pools, measured
2026-12-01), and are timed alternately in ``rounds`` rounds: in each round every path runs the same sentences, in
an order that rotates from round to round, with a short pause between measurements. A ratio is taken inside each round (path / CTranslate2 of that round), and a target is

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

A path may carry a variant after a colon (``dynamic-int8:width``, ``ct2-direct:width``): the same engine on the
model of ``dirs["<path>"]`` (``bench/pruned_shapes.py`` times a pruned and an unpruned model in the same rounds).

Worker spec::

    {"shape": "flan-t5-large", "tokenizer_dir": DIR, "rounds": 5, "source_tokens": 40, "new_tokens": 40,
     "dirs": {"dynamic-int8": DIR, "torch-fp32": DIR, "ct2-direct": DIR, "draft": DIR},
     "paths": {"1": ["ct2-direct", "dynamic-int8", "dynamic-int8+draft@0.7"], "16": ["ct2-direct", "dynamic-int8"]},
     "sentences": {"1": 2, "16": 16}}
"""

from __future__ import annotations

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


def merge_blocks(blocks: list[list[dict]]) -> list[dict]:
    """One row per shape from blocks of rounds run at different times of a benchmark run (``bench/run.py``): every
    spread holds the rounds of all blocks (so a verdict needs every round of every block to clear its line), and
    ``blocks`` keeps each block's own ratio spreads, start and status."""
    merged: list[dict] = []
    shapes = list(dict.fromkeys(row["shape"] for block in blocks for row in block))
    for shape in shapes:
        rows = [row for block in blocks for row in block if row["shape"] == shape]
        ok = [row for row in rows if row.get("status") == "ok"]
        summary = [
            {
                "block": row.get("block", index),
                "started": row.get("block_started"),
                "run_minute": row.get("run_minute"),
                "status": row.get("status"),
                **(
                    {
                        "rounds": row["rounds"],
                        "ratio_vs_ct2": {b: e["ratio_vs_ct2"] for b, e in row["by_batch"].items()},
                    }
                    if row.get("status") == "ok"
                    else {"reason": row.get("reason")}
                ),
            }
            for index, row in enumerate(rows)
        ]
        if not ok:
            merged.append({**rows[0], "blocks": summary})
            continue
        out = {key: value for key, value in ok[0].items() if key not in ("block", "block_started", "run_minute")}
        out["rounds"] = sum(row["rounds"] for row in ok)
        out["timed_s"] = sum(row["timed_s"] for row in ok)
        out["blocks"] = summary
        by_batch: dict = {}
        for batch, first in ok[0]["by_batch"].items():
            entry = {"sentences": first["sentences"], "tokens_per_s": {}, "ratio_vs_ct2": {}}
            for kind in ("tokens_per_s", "ratio_vs_ct2"):
                for path in first[kind]:
                    values = [
                        v
                        for row in ok
                        for v in row["by_batch"].get(batch, {}).get(kind, {}).get(path, {}).get("values", [])
                    ]
                    entry[kind][path] = spread(values)
            by_batch[batch] = entry
        out["by_batch"] = by_batch
        accepted: dict = {}
        for row in ok:
            for path, rate in row.get("acceptance_rate", {}).items():
                accepted.setdefault(path, []).extend(rate["values"])
        out["acceptance_rate"] = {path: spread(values) for path, values in accepted.items()}
        memory = next((row["memory"] for row in ok if row.get("memory")), None)
        if memory is not None:
            out["memory"] = memory
        merged.append(out)
    return merged


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


# ----------------------------------------------------------------------------- the two engine processes

RESULT = "@@rounds-result "  # the prefix of a worker's answer line on stdout (anything else there is ignored)


def torch_engine(init: dict):
    """The llmdiet paths, loaded once: ``measure(path, batch, count) -> (tokens/s, speculative stats)``."""
    import torch

    from llmdiet.engines import GenerationSettings, load_backend

    torch.set_num_threads(init["cores"])
    new = init["new_tokens"]
    settings = GenerationSettings(max_new_tokens=new, min_new_tokens=new, num_beams=1)
    backends: dict = {}
    for path in init["paths"]:
        name = path.split("+")[0]
        if name not in backends:
            backends[name] = load_backend(name.split(":")[0], init["dirs"][name], device="cpu")
        if "+draft" in path and f"{name}+draft" not in backends:
            backends[f"{name}+draft"] = load_backend(
                name, init["dirs"][name], device="cpu", draft=init["dirs"]["draft"]
            )
    acceptances = {p: Acceptance(float(p.split("@")[1]), seed=k) for k, p in enumerate(init["paths"]) if "@" in p}
    sources = init["sources"]

    def measure(path: str, key: str, count: int):
        batch = int(key.split("-")[0])
        groups = [list(range(i, min(i + batch, count))) for i in range(0, count, batch)]
        if key.endswith("-natural"):  # the decoder directly, each row stopped at its drawn length
            return natural(path, groups), None
        backend = backends[path.split("@")[0]]
        if backend.speculative is not None:
            backend.speculative.accept = acceptances.get(path)
        start = time.perf_counter()
        produced = sum(t.generated_tokens for g in groups for t in backend.translate([sources[i] for i in g], settings))
        wall = time.perf_counter() - start
        return produced / wall, backend.decoding_stats() if backend.speculative is not None else None

    def natural(path: str, groups: list[list[int]]) -> float:
        backend = backends[path.split("+")[0]]
        texts, lengths = init["natural"]["sources"], torch.tensor(init["natural"]["output_tokens"])
        start, produced = time.perf_counter(), 0
        for group in groups:
            enc = backend.tokenizer([texts[i] for i in group], return_tensors="pt", padding=True)
            wanted = lengths[group]
            longest = int(wanted.max())
            out = backend.static_decoder.generate(
                enc["input_ids"],
                enc["attention_mask"],
                longest,
                longest,  # EOS masked: a row ends only at its drawn length, as in CTranslate2 below
                stopping=lambda step, rows, tokens, wanted=wanted: step + 1 >= wanted[rows],
                drop_finished="+drop" in path,
            )
            if out.shape[1] != 1 + longest:
                raise RuntimeError(f"natural workload: {path} decoded {out.shape[1] - 1} steps, not {longest}")
            produced += int(wanted.sum())  # EOS masked and every row stopped at its length: exactly these
        return produced / (time.perf_counter() - start)

    return measure


def ct2_engine(init: dict):
    """CTranslate2 alone (this process never imports torch): every thread layout, the fastest kept per call."""
    import ctranslate2

    from .generation import ct2_layouts

    cores, new, tokens = init["cores"], init["new_tokens"], init["tokens"]
    layouts = sorted({layout for batch in init["batches"] for layout in ct2_layouts(int(batch.split("-")[0]), cores)})
    translators = {
        (path, intra, inter): ctranslate2.Translator(
            init["dirs"][path], device="cpu", compute_type="int8", inter_threads=inter, intra_threads=intra
        )
        for path in init.get("ct2_paths", ["ct2-direct"])
        for intra, inter in layouts
    }

    def measure(path: str, key: str, count: int):
        batch, natural = int(key.split("-")[0]), key.endswith("-natural")
        groups = [list(range(i, min(i + batch, count))) for i in range(0, count, batch)]
        texts = init["natural"]["tokens"] if natural else tokens
        wanted = init["natural"]["output_tokens"] if natural else None
        best = 0.0
        for layout in ct2_layouts(batch, cores):
            split = -(-batch // layout[1]) if layout[1] > 1 else 0
            start = time.perf_counter()
            produced = 0
            for group in groups:
                longest = max(wanted[i] for i in group) if natural else new
                options: dict = {}
                if natural:  # CTranslate2 drops a row from the batch when its callback returns True
                    options["callback"] = lambda r, group=group: r.step + 1 >= wanted[group[r.batch_id]]
                results = translators[(path, *layout)].translate_batch(
                    [texts[i] for i in group],
                    beam_size=1,
                    max_batch_size=split,
                    max_decoding_length=longest,
                    min_decoding_length=longest,
                    max_input_length=0,
                    return_end_token=True,
                    **options,
                )
                produced += sum(len(r.hypotheses[0]) for r in results)
            if natural and produced != sum(wanted[i] for g in groups for i in g):
                raise RuntimeError(f"natural workload: CTranslate2 produced {produced} tokens, not the drawn lengths")
            best = max(best, produced / (time.perf_counter() - start))
        return best, None

    return measure


def serve(kind: str) -> int:
    """A worker: the first stdin line is its init spec, then one ``[path, batch, count]`` per line, answered on
    stdout; an empty line ends it."""
    import json
    import sys

    init = json.loads(sys.stdin.readline())
    measure = (torch_engine if kind == "torch" else ct2_engine)(init)
    extra = {"torch_imported": "torch" in sys.modules}
    if kind == "ct2":
        extra["ct2_isa"] = _ct2_isa()
    print(RESULT + json.dumps({"ready": True, **extra}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            break
        path, batch, count = json.loads(line)
        tps, stats = measure(path, str(batch), int(count))
        print(RESULT + json.dumps({"tokens_per_s": tps, "stats": stats}), flush=True)
    return 0


class _Worker:
    def __init__(self, kind: str, init: dict):
        import json
        import subprocess
        import sys

        from .jobs import REPO_ROOT, job_environment

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.rounds", "--serve", kind],
            cwd=REPO_ROOT,
            env=job_environment(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.kind = kind
        self.ready = self._send(json.dumps(init))

    def _send(self, line: str) -> dict:
        import json

        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        for out in self.proc.stdout:
            if out.startswith(RESULT):
                return json.loads(out[len(RESULT) :])
        raise RuntimeError(f"the {self.kind} worker exited (code {self.proc.wait()})")

    def measure(self, path: str, batch: int, count: int) -> dict:
        import json

        return self._send(json.dumps([path, batch, count]))

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=60)


def is_ct2(path: str) -> bool:
    """CTranslate2 paths run in the CTranslate2 process: ``ct2-direct`` and its variants (``ct2-direct:NAME``)."""
    return path.split(":")[0] == "ct2-direct"


def run(spec: dict) -> dict:
    from llmdiet.provenance import available_cores

    from .workload import fixed_length_sources, load_tokenizer, natural_lengths, sources_of_lengths

    cores = spec.get("threads") or available_cores()
    tokenizer = load_tokenizer(spec["tokenizer_dir"])
    most = max([*spec["sentences"].values(), int((spec.get("memory") or {}).get("batch", 0))])
    sources = fixed_length_sources(tokenizer, most, spec.get("source_tokens", 40))
    all_paths = sorted({p for paths in spec["paths"].values() for p in paths})
    common: dict = {"cores": cores, "new_tokens": spec.get("new_tokens", 40), "dirs": spec["dirs"]}
    natural_keys = [key for key in spec["paths"] if key.endswith("-natural")]
    if natural_keys:
        source_tokens, output_tokens = natural_lengths(max(spec["sentences"][key] for key in natural_keys))
        texts = sources_of_lengths(tokenizer, source_tokens)
        common["natural"] = {
            "sources": texts,
            "tokens": [tokenizer.convert_ids_to_tokens(x) for x in tokenizer(texts)["input_ids"]],
            "source_tokens": source_tokens,
            "output_tokens": output_tokens,
        }
    workers: dict = {}
    try:
        if any(not is_ct2(p) for p in all_paths):
            workers["torch"] = _Worker(
                "torch", {**common, "paths": [p for p in all_paths if not is_ct2(p)], "sources": sources}
            )
        ct2_paths = [p for p in all_paths if is_ct2(p)]
        if ct2_paths:
            tokens = [tokenizer.convert_ids_to_tokens(x) for x in tokenizer(sources)["input_ids"]]
            workers["ct2"] = _Worker(
                "ct2", {**common, "tokens": tokens, "batches": list(spec["paths"]), "ct2_paths": ct2_paths}
            )

        def measure(path: str, batch: str, count: int) -> dict:
            time.sleep(spec.get("pause_s", 0.5))  # the other engine's idle threads stop spinning
            return workers["ct2" if is_ct2(path) else "torch"].measure(path, batch, count)

        for batch, paths in spec["paths"].items():  # warm-up: every path once, untimed
            for path in paths:
                measure(path, batch, min(int(batch.split("-")[0]), spec["sentences"][batch]))
        measured: dict = {batch: {p: [] for p in paths} for batch, paths in spec["paths"].items()}
        acceptance: dict = {}
        started = time.perf_counter()
        for round_index in range(spec.get("rounds", 5)):
            for batch, paths in spec["paths"].items():
                order = paths[round_index % len(paths) :] + paths[: round_index % len(paths)]  # rotate the order
                for path in order:
                    result = measure(path, batch, spec["sentences"][batch])
                    measured[batch][path].append(result["tokens_per_s"])
                    if result.get("stats"):  # batch 1 under the path's name, other batches as "path|batch"
                        key = path if batch == "1" else f"{path}|{batch}"
                        acceptance.setdefault(key, []).append(result["stats"]["acceptance_rate"])
        timed = time.perf_counter() - started
        ready = {kind: w.ready for kind, w in workers.items()}
    finally:
        for w in workers.values():
            w.close()
    memory = _memory(spec, cores, sources, tokenizer) if spec.get("memory") else None
    out: dict = {"shape": spec["shape"], "rounds": spec.get("rounds", 5), "cores": cores, "by_batch": {}}
    if "natural" in common:
        n = common["natural"]
        out["natural_workload"] = {
            "source_tokens": n["source_tokens"],
            "output_tokens": n["output_tokens"],
            "distribution": "assumed log-normal (bench/workload.py natural_lengths), not fitted to a corpus",
        }
    for batch, paths in measured.items():
        entry: dict = {"sentences": spec["sentences"][batch], "tokens_per_s": {}, "ratio_vs_ct2": {}}
        for path, values in paths.items():
            entry["tokens_per_s"][path] = spread(values)
            if path != "ct2-direct" and "ct2-direct" in paths:
                entry["ratio_vs_ct2"][path] = spread([v / c for v, c in zip(values, paths["ct2-direct"])])
        out["by_batch"][batch] = entry
    out["acceptance_rate"] = {p: spread([a for a in v if a is not None] or [0.0]) for p, v in acceptance.items()}
    out["timed_s"] = timed
    out["ct2_isa"] = ready.get("ct2", {}).get("ct2_isa")
    out["ct2_process_imported_torch"] = ready.get("ct2", {}).get("torch_imported")
    if memory is not None:
        out["memory"] = memory
    return out


def _memory(spec: dict, cores: int, sources: list[str], tokenizer) -> list[dict]:
    """Each engine alone in a fresh process (bench/memory_paths.py), after the rounds: runtime, model, peak."""
    from .generation import artifact_bytes
    from .memory_paths import measure

    batch, new = int(spec["memory"].get("batch", 16)), spec.get("new_tokens", 40)
    tokens = [tokenizer.convert_ids_to_tokens(x) for x in tokenizer(sources[:batch])["input_ids"]]
    rows = []
    for engine, key in (("ct2", "ct2-direct"), ("dynamic-int8", "dynamic-int8")):
        child = {"engine": engine, "dir": spec["dirs"][key], "batch": batch, "new_tokens": new, "cores": cores}
        child.update({"tokens": tokens} if engine == "ct2" else {"sources": sources[:batch]})
        row = measure(child)
        row["artifact_bytes"] = artifact_bytes(spec["dirs"][key])
        rows.append(row)
    return rows


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
    import sys

    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        raise SystemExit(serve(sys.argv[2]))
    raise SystemExit(worker_main(run))
