"""``llmdiet eval``: score one model on one or more eval sets and write a run directory.

    llmdiet eval --model PATH_OR_HUB_ID --eval-set NAME_OR_FILE [--eval-set ...] --out DIR
                 [--backend auto|torch-fp32|torch-bf16|<quantized backends>] [--batch-size N]
                 [--num-beams N] [--max-new-tokens N] [--limit N] [--device cpu|cuda]
    llmdiet eval --preset demo        # offline: the demo teacher on the three demo sets

Run directory::

    DIR/eval_settings.json        what the directory was made with (checked before resuming)
    DIR/<set>/samples.jsonl       one line per translated row, appended as batches finish
    DIR/results.json              metrics, timing, size, provenance (docs/results_schema.md)
    DIR/summary.md                the same, for people

Resuming: re-running the same command skips the rows already in ``samples.jsonl`` (a truncated last
line from a killed run is dropped). Work is redone in whole batches of the original batch plan, so
every sentence is translated in exactly the batch it would have been in without the interruption
and the final metrics are identical. Metrics always come from the complete ``samples.jsonl`` in
row order; timing covers only what this run translated (``resumed_from``, ``generated_this_run``).
A directory made with other settings (model, backend, decoding, batch size, device, set version,
prefix, columns, limit) is refused, with a hint to use a new ``--out``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from llmdiet.artifacts import model_type_of
from llmdiet.config import ConfigError, check_range, parse_config, precheck
from llmdiet.constants import REFERENCE_PREFIX
from llmdiet.data import DataError, ParallelRow, SkipReport
from llmdiet.demo import DEMO_MODEL_PREFIX
from llmdiet.engines import ARTIFACT_FILE, TORCH_BACKENDS, GenerationSettings, detect_backend, load_backend
from llmdiet.evaluation.eval_sets import EvalSet, resolve_eval_set
from llmdiet.evaluation.generation import generate_all, plan_batches, source_lengths
from llmdiet.evaluation.metrics import corpus_scores, degenerate_outputs
from llmdiet.evaluation.reports import (
    RESULTS_FILE,
    SCHEMA_VERSION,
    SET_TABLE_HEADERS,
    SUMMARY_FILE,
    markdown_table,
    set_table_rows,
    size_mb,
    summary_markdown,
    write_json_atomic,
)
from llmdiet.languages import default_prefix, direction_languages, language_codes
from llmdiet.modeling import resolve_model
from llmdiet.provenance import provenance

logger = logging.getLogger(__name__)

SETTINGS_FILE = "eval_settings.json"
SAMPLES_FILE = "samples.jsonl"
DEMO_SETS = ["demo-en-fr", "demo-fr-en", "demo-ko-en"]


@dataclass
class EvalArguments:
    model: Optional[str] = field(
        default=None,
        metadata={
            "help": "Model to evaluate: a local save_pretrained/artifact directory, a hub id, "
            "or llmdiet-demo:teacher / llmdiet-demo:student (built offline)."
        },
    )
    eval_set: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Eval set name (see llmdiet/evaluation/sets/) or local file; repeat the flag or "
            "give several values."
        },
    )
    out: Optional[str] = field(default=None, metadata={"help": "Run directory to write (re-run to resume)."})
    tokenizer: Optional[str] = field(
        default=None,
        metadata={
            "help": "Tokenizer directory or hub id, when --model's directory "
            "has no tokenizer files (plain model directories; artifacts carry their own)."
        },
    )
    backend: str = field(
        default="auto",
        metadata={"help": "Backend name; 'auto' reads the artifact's llmdiet_artifact.json, else torch-fp32."},
    )
    device: str = field(default="cpu", metadata={"help": "cpu, cuda or cuda:N."})
    batch_size: int = field(default=16, metadata={"help": "Sentences per generate() call."})
    num_beams: int = field(default=1, metadata={"help": "Beam size (1 = greedy)."})
    max_new_tokens: int = field(default=128, metadata={"help": "Most tokens generated per sentence."})
    max_source_length: int = field(
        default=512,
        metadata={
            "help": "Sources longer than this many tokens (prefix included) "
            "are truncated; their count is stored per set in results.json."
        },
    )
    min_new_tokens: int = field(default=0, metadata={"help": "Fewest tokens generated per sentence (timing runs)."})
    limit: Optional[int] = field(default=None, metadata={"help": "Evaluate only the first N rows of each set."})
    source_column: str = field(default="source", metadata={"help": "Source column of local-file eval sets."})
    reference_column: str = field(default="reference", metadata={"help": "Reference column of local-file eval sets."})
    no_header: bool = field(
        default=False,
        metadata={"help": "Local TSV/CSV eval files have no header row: two columns, source then reference."},
    )
    prefix: Optional[str] = field(
        default=None,
        metadata={
            "help": "Task prefix for local-file eval sets ('' = none). Default: the reference T5 prefix for T5-family "
            "models, none for other families. YAML sets carry their own prefix, applied to T5-family models only."
        },
    )
    source_lang: Optional[str] = field(
        default=None,
        metadata={
            "help": "Source language code of multilingual models (M2M100 'en', NLLB 'eng_Latn', mBART-50 'en_XX'); "
            "default: each eval set's direction. Refused for models without language tokens."
        },
    )
    target_lang: Optional[str] = field(
        default=None,
        metadata={"help": "Target language code (forced first token; CTranslate2 target_prefix); default as above."},
    )
    skip_bad_rows: bool = field(default=False, metadata={"help": "Skip (and count) bad rows instead of stopping."})
    warmup_batches: int = field(
        default=1, metadata={"help": "Batches run once before timing starts (excluded from timing)."}
    )
    threads: Optional[int] = field(default=None, metadata={"help": "torch intra-op threads (default: torch's choice)."})
    decoding: str = field(
        default="static",
        metadata={
            "help": "Greedy decoding of the torch backends: 'static' (llmdiet's static KV cache, the default: same output "
            "as transformers' generate, faster) or 'generate' (transformers' own loop). Other backends ignore it."
        },
    )
    draft_model: Optional[str] = field(
        default=None,
        metadata={
            "help": "Speculative decoding: a small model sharing --model's vocabulary (e.g. the student distilled from "
            "it; a directory or torch artifact) proposes tokens that --model verifies through llmdiet's static cache. "
            "Greedy T5 torch backends only; float teachers give their own greedy output (results record the "
            "acceptance rate per set and whether the output is lossless)."
        },
    )
    draft_lookahead: int = field(
        default=4, metadata={"help": "Draft tokens proposed in the first round (then adapted, 1..10)."}
    )
    drop_finished: bool = field(
        default=False,
        metadata={
            "help": "Remove finished rows from a batch as they end (as CTranslate2 does): faster on ragged batches "
            "(measured in BENCHMARKS.md, natural-length workload). Float "
            "models keep their output; int8 activation scales are per batch, so int8 outputs may change slightly. "
            "Greedy torch backends with llmdiet's static decoder, without --draft_model."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed (decoding is deterministic; recorded for provenance)."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar (--no_progress to hide)."})

    def __post_init__(self):
        for name in ("model", "out"):
            if not getattr(self, name):
                raise ConfigError(f"--{name} is required (or use --preset demo)")
        if not self.eval_set:
            raise ConfigError(
                "--eval-set is required: a set name (see llmdiet/evaluation/sets/) or a local file (or use --preset demo)"
            )
        check_range("batch_size", self.batch_size, 1)
        check_range("num_beams", self.num_beams, 1)
        check_range("max_new_tokens", self.max_new_tokens, 1)
        check_range("max_source_length", self.max_source_length, 2)
        check_range("min_new_tokens", self.min_new_tokens, 0, self.max_new_tokens)
        check_range("limit", self.limit, 1)
        check_range("warmup_batches", self.warmup_batches, 0)
        check_range("threads", self.threads, 1)
        if self.decoding not in ("static", "generate"):
            raise ConfigError(f"--decoding must be static or generate, got '{self.decoding}'")
        check_range("draft_lookahead", self.draft_lookahead, 1, 10)
        if self.draft_model is not None and (self.decoding != "static" or self.num_beams != 1):
            raise ConfigError(
                "--draft_model decodes greedily through llmdiet's static cache: drop --decoding generate / --num_beams"
            )
        if self.drop_finished and (self.decoding != "static" or self.num_beams != 1 or self.draft_model is not None):
            raise ConfigError(
                "--drop_finished works in llmdiet's greedy static decoder: drop --decoding generate / --num_beams / "
                "--draft_model, or drop --drop_finished"
            )
        if not (self.device == "cpu" or self.device == "cuda" or self.device.startswith("cuda:")):
            raise ConfigError(f"--device must be cpu, cuda or cuda:N, got '{self.device}'")

    def generation_settings(self) -> GenerationSettings:
        return GenerationSettings(
            self.max_new_tokens,
            self.min_new_tokens,
            self.num_beams,
            self.max_source_length,
            source_lang=self.source_lang,
            target_lang=self.target_lang,
        )


# ----------------------------------------------------------------------------- command line


def demo_preset() -> dict:
    return {"model": DEMO_MODEL_PREFIX + "teacher", "eval_set": list(DEMO_SETS), "out": "runs/eval-demo-teacher"}


PRESETS = {"demo": demo_preset}


def merge_repeated_option(argv: list[str], flags: tuple[str, ...]) -> list[str]:
    """``--eval-set a --eval-set b c`` -> ``--eval_set a b c`` (argparse would keep only the last)."""
    values, rest, i, seen = [], [], 0, False
    while i < len(argv):
        arg = argv[i]
        if arg in flags:
            seen, i = True, i + 1
            while i < len(argv) and not argv[i].startswith("--"):
                values.append(argv[i])
                i += 1
            continue
        if any(arg.startswith(f + "=") for f in flags):
            seen = True
            values.append(arg.split("=", 1)[1])
        else:
            rest.append(arg)
        i += 1
    return rest + ([flags[0], *values] if seen else [])


def parse_args(argv: list[str], prog: str = "llmdiet eval") -> EvalArguments:
    argv = merge_repeated_option(list(argv), ("--eval_set", "--eval-set"))
    precheck([EvalArguments], argv, presets=PRESETS, prog=prog, strict=True)  # bad flags answer before torch loads
    (args,) = parse_config(
        [EvalArguments],
        argv,
        presets=PRESETS,
        prog=prog,
        description="Score a model on eval sets: BLEU, chrF, ROUGE-L, timing, size, memory.",
    )
    return args


def main(argv: list[str] | None = None, prog: str = "llmdiet eval") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv, prog)
    results = run_eval(args, command=[*prog.split(), *argv])
    print()
    if results["demo"]:
        from llmdiet.demo import DEMO_BANNER

        print(DEMO_BANNER + "\n")
    mb, where = size_mb(results["size"])
    print(
        f"{results['model']['name']} | backend {results['model']['backend'].get('backend')} | "
        f"{mb or 0:.1f} MB ({where}) | {results['provenance']['hardware'].get('torch_threads')} threads"
    )
    print(markdown_table(SET_TABLE_HEADERS, set_table_rows(results)))
    print(f"\nwrote {Path(str(args.out)) / RESULTS_FILE} and {Path(str(args.out)) / SUMMARY_FILE}")
    return 0


# ----------------------------------------------------------------------------- run directory


def model_fingerprint(path: str) -> dict | None:
    """Content hashes of a local model's config, generation config, weight and tokenizer files, by part (None for a
    hub id): a model retrained at the same path, or given another forced target language, is another model, and a
    resumed run says which part changed."""
    if not Path(path).is_dir():
        return None
    from llmdiet.fingerprint import model_identity

    return model_identity(path)


def set_settings(spec: EvalSet, args: EvalArguments, num_rows: int) -> dict:
    """What decides a set's samples, beside the run-wide settings."""
    return {
        "version": spec.version,
        "fingerprint": spec.fingerprint(),
        "prefix": spec.prefix,
        "columns": [spec.source_column, spec.reference_column],
        "rows": [spec.start, spec.stop],
        "limit": args.limit,
        "num_rows": num_rows,
        "skip_bad_rows": args.skip_bad_rows,
    }


def _differences(stored: dict, now: dict, where: str = "") -> list[str]:
    out = []
    for k in sorted(set(stored) | set(now)):
        a, b = stored.get(k), now.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{where}{k}.")
        elif a != b:
            out.append(f"{where}{k}: was {a!r}, now {b!r}")
    return out


def check_run_dir(out: Path, run_settings: dict, sets: dict[str, dict]) -> dict:
    """Refuse ``out`` if it was made with other settings; return the settings to record (nothing written)."""
    path = out / SETTINGS_FILE
    hint = f"use a new --out directory (or delete {out}) to start over"
    if path.is_file():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: not valid JSON ({err}); {hint}") from None
        diffs = _differences(stored.get("run", {}), run_settings)
        for name, now in sets.items():
            if name in stored.get("sets", {}):
                diffs += _differences(stored["sets"][name], now, f"{name}.")
        if diffs:
            raise ConfigError(f"{out} was made with different settings ({'; '.join(diffs)}); {hint}")
        sets = {**stored.get("sets", {}), **sets}
    elif out.is_dir() and any(out.glob(f"*/{SAMPLES_FILE}")):
        raise ConfigError(f"{out} holds samples but no {SETTINGS_FILE}, so they cannot be trusted; {hint}")
    return {"run": run_settings, "sets": sets}


def read_samples(path: Path, rows: list[ParallelRow]) -> dict[int, dict]:
    """Samples already written, by row index; drops a truncated last line; checks they match ``rows``."""
    if not path.is_file():
        return {}
    data = path.read_bytes()
    complete = data.rfind(b"\n") + 1
    if complete < len(data):
        logger.warning(
            "%s: dropping a truncated last line (%d bytes) left by an interrupted run", path, len(data) - complete
        )
        with open(path, "r+b") as f:
            f.truncate(complete)
        data = data[:complete]
    samples: dict[int, dict] = {}
    for lineno, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            sample = json.loads(line)
            index = sample["index"]
            sample["hypothesis"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DataError(f"{where}: not a valid sample line ({err}); delete the file or use a new --out") from None
        if not isinstance(index, int) or not 0 <= index < len(rows):
            raise DataError(
                f"{where}: sample index {index!r} is outside this eval set's {len(rows)} rows; use a new --out"
            )
        if index in samples:
            raise DataError(f"{where}: row {index} appears twice; delete the file or use a new --out")
        if sample.get("source") != rows[index].source or sample.get("reference") != rows[index].target:
            raise ConfigError(
                f"{where}: row {index} does not match the eval set's source/reference; "
                "the samples come from other data; use a new --out"
            )
        samples[index] = sample
    return samples


# ----------------------------------------------------------------------------- one set


def set_generation_settings(backend, spec: EvalSet, args: EvalArguments) -> GenerationSettings:
    """The run's generation settings, with the set's direction as the languages of a multilingual model when
    ``--source_lang`` / ``--target_lang`` are not given (one-direction models take none)."""
    settings = args.generation_settings()
    tokenizer = getattr(backend, "tokenizer", None)
    if tokenizer is None or not language_codes(tokenizer):
        return settings
    source, target = direction_languages(spec.direction)
    return dataclasses.replace(
        settings, source_lang=settings.source_lang or source, target_lang=settings.target_lang or target
    )


def _add_speculative_stats(backend, timing: dict) -> None:
    """Speculative decoding's acceptance over the rows this run translated (warm-up batches included)."""
    stats = backend.decoding_stats() if hasattr(backend, "decoding_stats") else None
    if stats is not None:
        timing["speculative"] = stats
        logger.info(
            "speculative decoding: %s of %s draft tokens accepted (%.0f%%), %.2f tokens per verifying forward",
            stats["accepted"],
            stats["proposed"],
            100 * (stats["acceptance_rate"] or 0.0),
            stats["tokens_per_teacher_forward"] or 0.0,
        )


def evaluate_set(
    backend, spec: EvalSet, rows: list[ParallelRow], set_dir: Path, args: EvalArguments, previous_timing: dict | None
) -> dict:
    """Translate the rows not yet in ``samples.jsonl``, then score the complete file."""
    set_dir.mkdir(parents=True, exist_ok=True)
    samples_path = set_dir / SAMPLES_FILE
    done = read_samples(samples_path, rows)
    prefixed = [spec.prefix + r.source for r in rows]
    settings = set_generation_settings(backend, spec, args)
    lengths, unit = source_lengths(backend, prefixed)
    truncated = sum(n > args.max_source_length for n in lengths) if unit == "tokens" else None
    if truncated:
        logger.warning(
            "%s: %d of %d sources are longer than %d tokens and are truncated (--max_source_length)",
            spec.name,
            truncated,
            len(rows),
            args.max_source_length,
        )
    plan = plan_batches(
        [min(n, args.max_source_length) for n in lengths] if unit == "tokens" else lengths, args.batch_size
    )
    todo = sorted(i for batch in plan if any(j not in done for j in batch) for i in batch)
    resumed_from = len(done)
    if resumed_from:
        logger.info("%s: resuming, %d of %d rows already translated", spec.name, resumed_from, len(rows))

    timing = previous_timing
    if todo:
        with open(samples_path, "a", encoding="utf-8") as out:

            def write_batch(indices, translations):
                for local, translation in zip(indices, translations):
                    i = todo[local]
                    if i in done:  # already on disk from the interrupted run (same batch, same output)
                        continue
                    record = {
                        "index": i,
                        "source": rows[i].source,
                        "reference": rows[i].target,
                        "hypothesis": translation.hypothesis,
                        "generated_tokens": translation.generated_tokens,
                        "origin": rows[i].origin,
                    }
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
                    done[i] = record
                out.flush()

            result = generate_all(
                backend,
                [prefixed[i] for i in todo],
                settings,
                args.batch_size,
                warmup_batches=args.warmup_batches,
                on_batch=write_batch,
                progress=args.progress,
            )
        timing = {
            **result.timing_dict(),
            "resumed_from": resumed_from,
            "generated_this_run": len(todo),
            "covers_all_rows": resumed_from == 0,
        }
        _add_speculative_stats(backend, timing)
    elif timing is None:
        # every row was translated by a run killed before it saved its timing: time the set again (outputs are
        # not rewritten), so a resumed run never loses a set's speed
        logger.info(
            "%s: every row was translated by an interrupted run that saved no timing; timing the set again", spec.name
        )
        result = generate_all(
            backend,
            prefixed,
            settings,
            args.batch_size,
            warmup_batches=args.warmup_batches,
            progress=args.progress,
        )
        timing = {
            **result.timing_dict(),
            "resumed_from": resumed_from,
            "generated_this_run": 0,
            "covers_all_rows": True,
            "retimed": True,
        }
        _add_speculative_stats(backend, timing)

    samples = [s for _, s in sorted(read_samples(samples_path, rows).items())]
    if len(samples) != len(rows):
        raise RuntimeError(f"{samples_path}: {len(samples)} samples for {len(rows)} rows after generation")
    metrics = corpus_scores([s["hypothesis"] for s in samples], [s["reference"] for s in samples])
    degenerate = degenerate_outputs(
        [s["hypothesis"] for s in samples],
        generated_tokens=[s.get("generated_tokens") or 0 for s in samples],
        max_new_tokens=args.max_new_tokens,
    )
    if degenerate["warning"]:
        logger.warning(
            "%s: %.0f%% of the hypotheses are empty or repetitive: the model may be broken "
            "(a quantization that overflows?)",
            spec.name,
            100 * degenerate["share"],
        )
    return {
        "languages": {"source": settings.source_lang, "target": settings.target_lang},
        "metrics": metrics,
        "timing": timing,
        "num_samples": len(samples),
        "degenerate": degenerate,
        "truncated_sources": truncated,
        "max_source_length": args.max_source_length,
        "samples_file": f"{set_dir.name}/{SAMPLES_FILE}",
    }


# ----------------------------------------------------------------------------- the run


def unique_set_names(specs: list[EvalSet]) -> list[str]:
    names: list[str] = []
    seen: dict[str, int] = {}
    for spec in specs:
        seen[spec.name] = seen.get(spec.name, 0) + 1
        names.append(spec.name if seen[spec.name] == 1 else f"{spec.name}-{seen[spec.name]}")
    return names


def run_eval(args: EvalArguments, command: list[str] | None = None) -> dict:
    """Evaluate ``args.model`` on every set; write and return ``results.json``'s content.

    The run directory is locked while this runs: a second run into it stops at once (ConfigError).
    """
    from llmdiet.locking import LOCK_FILE, directory_lock

    if args.model is None or args.out is None:  # EvalArguments refuses both; for callers that build it by hand
        raise ConfigError("--model and --out are required")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a directory; choose a directory path")
    existed = out.exists()
    try:
        with directory_lock(out, "llmdiet eval"):
            return _run_eval_locked(args, command)
    finally:
        # a run that failed before writing anything leaves no directory behind
        if not existed and out.is_dir() and [p.name for p in out.iterdir()] == [LOCK_FILE]:
            shutil.rmtree(out, ignore_errors=True)


def _run_eval_locked(args: EvalArguments, command: list[str] | None) -> dict:
    import torch

    assert args.model is not None and args.out is not None  # checked by run_eval
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    model_path = resolve_model(args.model)

    # 1. eval sets first: data mistakes surface before a large model is loaded
    specs = [
        resolve_eval_set(
            v,
            source_column=args.source_column,
            reference_column=args.reference_column,
            prefix=REFERENCE_PREFIX if args.prefix is None else args.prefix,
            header=not args.no_header,
        )
        for v in args.eval_set
    ]
    # the T5 task prefix is for T5-family models only; an explicit --prefix on a local file is kept as asked
    model_type = model_type_of(model_path)
    specs = [
        s
        if (s.declared_in is None and args.prefix is not None)
        else dataclasses.replace(s, prefix=default_prefix(model_type, s.prefix))
        for s in specs
    ]
    loaded = {}
    for name, spec in zip(unique_set_names(specs), specs):
        report = SkipReport()
        rows = spec.load(skip_bad_rows=args.skip_bad_rows, report=report)
        report.log(f"eval set '{name}'")
        loaded[name] = (spec, rows[: args.limit] if args.limit else rows, report)

    # 2. the run directory: same settings, or refuse
    backend_name = detect_backend(model_path) if args.backend == "auto" else args.backend
    local = Path(model_path).exists()
    run_settings = {
        "model": str(Path(model_path).resolve()) if local else model_path,
        "model_fingerprint": model_fingerprint(model_path),
        "tokenizer": args.tokenizer,
        "backend": backend_name,
        "device": args.device,
        "batch_size": args.batch_size,
        **args.generation_settings().as_dict(),
    }
    if args.draft_model is not None:
        if backend_name not in TORCH_BACKENDS:
            raise ConfigError(
                f"--draft_model: backend {backend_name} cannot verify drafts (torch backends only: "
                f"{', '.join(TORCH_BACKENDS)}); drop --draft_model"
            )
        draft_path = resolve_model(args.draft_model)
        for flag, kind in (("--model", model_type), ("--draft_model", model_type_of(draft_path))):
            if kind not in ("t5", "mt5"):  # what StaticCacheT5Decoder serves (static_decoding_unsupported)
                raise ConfigError(
                    f"--draft_model: speculative decoding runs on llmdiet's static T5 decoder, and {flag} is a "
                    f"{kind} model (decoded with transformers' generate); use T5/mT5 models or drop --draft_model"
                )
        run_settings["draft"] = {
            "model": str(Path(draft_path).resolve()) if Path(draft_path).exists() else draft_path,
            "fingerprint": model_fingerprint(draft_path),
            "lookahead": args.draft_lookahead,
        }
    if args.drop_finished:
        if backend_name not in TORCH_BACKENDS:
            raise ConfigError(
                f"--drop_finished: backend {backend_name} does not run llmdiet's static decoder (torch backends only: "
                f"{', '.join(TORCH_BACKENDS)}); drop --drop_finished"
            )
        if model_type not in ("t5", "mt5"):  # what StaticCacheT5Decoder serves (static_decoding_unsupported)
            raise ConfigError(
                f"--drop_finished runs in llmdiet's static T5 decoder, and --model is a {model_type} model (decoded "
                "with transformers' generate, which keeps finished rows); drop --drop_finished"
            )
        run_settings["drop_finished"] = True  # in the settings only when asked: earlier run dirs still resume
    settings = check_run_dir(out, run_settings, {n: set_settings(s, args, len(r)) for n, (s, r, _) in loaded.items()})
    previous = _previous_results(out)

    # 3. the model (the directory is only written once it loads), then each set
    options: dict[str, Any] = {"tokenizer_path": args.tokenizer} if args.tokenizer else {}
    if args.draft_model is not None:
        options.update(draft=run_settings["draft"]["model"], draft_lookahead=args.draft_lookahead)
    if args.drop_finished:
        options["drop_finished"] = True
    backend = load_backend(backend_name, model_path, device=args.device, decoding=args.decoding, **options)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / SETTINGS_FILE, settings)
    sets = {}
    for name, (spec, rows, report) in loaded.items():
        logger.info("eval set %s: %d rows", name, len(rows))
        entry = evaluate_set(
            backend, spec, rows, out / name, args, (previous.get("sets", {}).get(name) or {}).get("timing")
        )
        sets[name] = {
            "eval_set": {**spec.describe(), "fingerprint": spec.fingerprint()},
            **entry,
            "skipped_rows": {"total": report.total, "reasons": dict(report.reasons), "examples": report.examples},
        }

    from llmdiet.modeling import counted_files

    size = dict(backend.size_info())
    size["disk_counted"] = counted_files(model_path)
    artifact = Path(model_path) / ARTIFACT_FILE
    size["artifact"] = json.loads(artifact.read_text()) if artifact.is_file() else None
    results: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": "llmdiet-eval",
        "model": {
            "name": _model_name(args.model, model_path),
            "path": run_settings["model"],
            "requested": args.model,
            "requested_backend": args.backend,
            "backend": backend.describe(),
        },
        "decoding": {
            **args.generation_settings().as_dict(),
            "batch_size": args.batch_size,
            "warmup_batches": args.warmup_batches,
            "limit": args.limit,
        },
        "size": size,
        "sets": sets,
        "demo": any(spec.demo for spec, _, _ in loaded.values()) or args.model.startswith(DEMO_MODEL_PREFIX),
        "provenance": provenance(args.seed, list(command or ["llmdiet", "eval"])),
    }
    results["provenance"]["cwd"] = os.getcwd()
    write_json_atomic(out / RESULTS_FILE, results)
    from llmdiet.demo import DEMO_BANNER

    (out / SUMMARY_FILE).write_text(
        summary_markdown(results, DEMO_BANNER if results["demo"] else None), encoding="utf-8"
    )
    return results


def _model_name(requested: str, path: str) -> str:
    if requested.startswith(DEMO_MODEL_PREFIX):
        return requested
    p = Path(path)
    return p.resolve().name if p.exists() else path


def _previous_results(out: Path) -> dict:
    try:
        return json.loads((out / RESULTS_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
