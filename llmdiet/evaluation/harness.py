"""``llmdiet eval``: score one model on one or more eval sets and write a run directory.

    llmdiet eval --model PATH_OR_HUB_ID --eval_set NAME_OR_FILE [--eval_set ...] --output_dir DIR
                 [--backend auto|torch-fp32|torch-bf16|<quantized backends>] [--batch-size N]
                 [--num_beams N] [--max_new_tokens N] [--max_eval_samples N] [--device cpu|cuda]
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
prefix, columns, limit) is refused, with a hint to use a new ``--output_dir``.
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
from llmdiet.data import ParallelRow, SkipReport
from llmdiet.demo import DEMO_MODEL_PREFIX
from llmdiet.engines import ARTIFACT_FILE, TORCH_BACKENDS, GenerationSettings, detect_backend, load_backend
from llmdiet.evaluation.eval_sets import EvalSet, resolve_eval_set
from llmdiet.evaluation.ranks import Ranks, current_ranks
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
from llmdiet.evaluation.run_dir import (
    SETTINGS_FILE,
    check_run_dir,
    model_fingerprint,
    previous_results,
    set_settings,
)
from llmdiet.evaluation.set_runner import SetJob, evaluate_set, set_generation_settings
from llmdiet.languages import default_prefix
from llmdiet.modeling import resolve_model
from llmdiet.provenance import provenance

logger = logging.getLogger(__name__)

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
        metadata={"help": "Eval set name (see eval_sets/) or local file; repeat the flag or give several values."},
    )
    output_dir: Optional[str] = field(default=None, metadata={"help": "Run directory to write (re-run to resume)."})
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
    max_eval_samples: Optional[int] = field(
        default=None, metadata={"help": "Evaluate only the first N rows of each set."}
    )
    source_column: str = field(default="source", metadata={"help": "Source column of local-file eval sets."})
    target_column: str = field(
        default="reference", metadata={"help": "Reference (target) column of local-file eval sets."}
    )
    no_header: bool = field(
        default=False,
        metadata={"help": "Local TSV/CSV eval files have no header row: two columns, source then reference."},
    )
    source_prefix: Optional[str] = field(
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
            "(measured in BENCHMARKS.md, natural-length workload). Float models and dynamic-int8 with per-row "
            "activation scales (the default) keep their output. "
            "Greedy torch backends with llmdiet's static decoder, without --draft_model."
        },
    )
    int8_activation_scales: str = field(
        default="per_row",
        metadata={
            "help": "dynamic-int8 models: per_row quantizes each row of a Linear's input with its own scale, so a "
            "sentence's output does not depend on the rest of its batch (speculative verification and "
            "--drop_finished keep the model's own greedy output); per_batch is torch.ao's one scale per input "
            "tensor (outputs change with the batch).",
            "choices": ["per_row", "per_batch"],
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed (decoding is deterministic; recorded for provenance)."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar (--no_progress to hide)."})

    def __post_init__(self):
        for name in ("model", "output_dir"):
            if not getattr(self, name):
                raise ConfigError(f"--{name} is required (or use --preset demo)")
        if not self.eval_set:
            raise ConfigError(
                "--eval_set is required: a set name (see eval_sets/) or a local file (or use --preset demo)"
            )
        check_range("batch_size", self.batch_size, 1)
        check_range("num_beams", self.num_beams, 1)
        check_range("max_new_tokens", self.max_new_tokens, 1)
        check_range("max_source_length", self.max_source_length, 2)
        check_range("min_new_tokens", self.min_new_tokens, 0, self.max_new_tokens)
        check_range("max_eval_samples", self.max_eval_samples, 1)
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
    return {"model": DEMO_MODEL_PREFIX + "teacher", "eval_set": list(DEMO_SETS), "output_dir": "runs/eval-demo-teacher"}


PRESETS = {"demo": demo_preset}


def parse_args(argv: list[str], prog: str = "llmdiet eval") -> EvalArguments:
    precheck([EvalArguments], argv, presets=PRESETS, prog=prog)  # bad flags answer before torch loads
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
    if "rank" in results:  # not rank 0 of a multi-process run: rank 0 reports
        return 0
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
    print(f"\nwrote {Path(str(args.output_dir)) / RESULTS_FILE} and {Path(str(args.output_dir)) / SUMMARY_FILE}")
    return 0


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

    if args.model is None or args.output_dir is None:  # EvalArguments refuses both; for callers that build it by hand
        raise ConfigError("--model and --output_dir are required")
    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--output_dir {out}: exists and is not a directory; choose a directory path")
    ranks = current_ranks()
    if not ranks.main:  # rank 0 holds the lock and writes the run's files; the others translate their share
        return _run_eval_locked(args, command, ranks)
    existed = out.exists()
    try:
        with directory_lock(out, "llmdiet eval"):
            return _run_eval_locked(args, command, ranks)
    finally:
        # a run that failed before writing anything leaves no directory behind
        if not existed and out.is_dir() and [p.name for p in out.iterdir()] == [LOCK_FILE]:
            shutil.rmtree(out, ignore_errors=True)


def _model_name(requested: str, path: str) -> str:
    if requested.startswith(DEMO_MODEL_PREFIX):
        return requested
    p = Path(path)
    return p.resolve().name if p.exists() else path


def _run_eval_locked(args: EvalArguments, command: list[str] | None, ranks: Ranks) -> dict:
    import torch

    assert args.model is not None and args.output_dir is not None  # checked by run_eval
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.output_dir)
    model_path = resolve_model(args.model)
    model_type = model_type_of(model_path)
    loaded = _load_sets(args, model_type)  # data mistakes surface before a large model is loaded
    backend_name = detect_backend(model_path) if args.backend == "auto" else args.backend
    run_settings = _run_settings(args, model_path, model_type, backend_name)
    set_parts = {
        n: set_settings(s, args.max_eval_samples, args.skip_bad_rows, len(r)) for n, (s, r, _) in loaded.items()
    }
    settings = check_run_dir(out, run_settings, set_parts)  # same settings, or refuse
    previous = previous_results(out)
    # the model (the directory is only written once it loads), then each set
    options: dict[str, Any] = {"tokenizer_path": args.tokenizer} if args.tokenizer else {}
    if args.draft_model is not None:
        options.update(draft=run_settings["draft"]["model"], draft_lookahead=args.draft_lookahead)
    if args.drop_finished:
        options["drop_finished"] = True
    if backend_name == "dynamic-int8":
        options["activation_scales"] = args.int8_activation_scales
    device = args.device
    if ranks.world > 1 and device == "cuda":  # one GPU per process
        device = f"cuda:{os.environ.get('LOCAL_RANK', ranks.rank)}"
    backend = load_backend(backend_name, model_path, device=device, decoding=args.decoding, **options)
    out.mkdir(parents=True, exist_ok=True)
    if ranks.main:
        write_json_atomic(out / SETTINGS_FILE, settings)
    sets = _evaluate_sets(args, backend, loaded, out, previous, ranks)
    if not ranks.main:
        return {"rank": ranks.rank, "processes": ranks.world}
    results = _results(args, model_path, run_settings, backend, sets, loaded, command)
    if ranks.world > 1:
        results["decoding"]["processes"] = ranks.world  # rows split between processes (llmdiet.evaluation.ranks)
    write_json_atomic(out / RESULTS_FILE, results)
    from llmdiet.demo import DEMO_BANNER

    (out / SUMMARY_FILE).write_text(
        summary_markdown(results, DEMO_BANNER if results["demo"] else None), encoding="utf-8"
    )
    return results


def _evaluate_sets(args: EvalArguments, backend, loaded: dict, out: Path, previous: dict, ranks: Ranks) -> dict:
    """Each set's entry of results.json (on rank 0; the other ranks translate their share and return {})."""
    sets: dict = {}
    for name, (spec, rows, report) in loaded.items():
        logger.info("eval set %s: %d rows", name, len(rows))
        job = SetJob(
            backend,
            spec,
            rows,
            out / name,
            set_generation_settings(backend, spec, args.generation_settings()),
            args.max_source_length,
            args.max_new_tokens,
            args.batch_size,
            args.warmup_batches,
            args.progress and ranks.main,
            ranks,
        )
        entry = evaluate_set(job, (previous.get("sets", {}).get(name) or {}).get("timing"))
        if entry is None:  # not rank 0: its share is in the set's samples
            continue
        sets[name] = {
            "eval_set": {**spec.describe(), "fingerprint": spec.fingerprint()},
            **entry,
            "skipped_rows": {"total": report.total, "reasons": dict(report.reasons), "examples": report.examples},
        }
    return sets


def _load_sets(args: EvalArguments, model_type: str | None) -> dict[str, tuple[EvalSet, list[ParallelRow], SkipReport]]:
    """Every eval set, read and checked, by its unique name: (set, rows up to --max_eval_samples, skipped rows)."""
    specs = [
        resolve_eval_set(
            v,
            source_column=args.source_column,
            reference_column=args.target_column,
            prefix=REFERENCE_PREFIX if args.source_prefix is None else args.source_prefix,
            header=not args.no_header,
        )
        for v in args.eval_set
    ]
    # the T5 task prefix is for T5-family models only; an explicit --source_prefix on a local file is kept as asked
    specs = [
        s
        if (s.declared_in is None and args.source_prefix is not None)
        else dataclasses.replace(s, prefix=default_prefix(model_type, s.prefix))
        for s in specs
    ]
    loaded = {}
    for name, spec in zip(unique_set_names(specs), specs):
        report = SkipReport()
        rows = spec.load(skip_bad_rows=args.skip_bad_rows, report=report)
        report.log(f"eval set '{name}'")
        loaded[name] = (spec, rows[: args.max_eval_samples] if args.max_eval_samples else rows, report)
    return loaded


def _run_settings(args: EvalArguments, model_path: str, model_type: str | None, backend_name: str) -> dict:
    """What the run directory records and checks on resume: model, backend, decoding (and a draft model)."""
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
        run_settings["draft"] = _draft_settings(args, model_type, backend_name)
    if args.drop_finished:
        _check_static_decoder("--drop_finished", backend_name, model_type)
        run_settings["drop_finished"] = True  # in the settings only when asked: earlier run dirs still resume
    if backend_name == "dynamic-int8":  # the outputs depend on it: a run dir of the other scheme is not resumed
        run_settings["int8_activation_scales"] = args.int8_activation_scales
    return run_settings


def _check_static_decoder(flag: str, backend_name: str, model_type: str | None) -> None:
    """``flag`` needs llmdiet's static T5 decoder: a torch backend and a T5/mT5 model."""
    if backend_name not in TORCH_BACKENDS:
        raise ConfigError(
            f"{flag}: backend {backend_name} does not run llmdiet's static decoder (torch backends only: "
            f"{', '.join(TORCH_BACKENDS)}); drop {flag}"
        )
    if model_type not in ("t5", "mt5"):  # what StaticCacheT5Decoder serves (static_decoding_unsupported)
        raise ConfigError(
            f"{flag} runs in llmdiet's static T5 decoder, and --model is a {model_type} model (decoded "
            f"with transformers' generate); use a T5/mT5 model or drop {flag}"
        )


def _draft_settings(args: EvalArguments, model_type: str | None, backend_name: str) -> dict:
    assert args.draft_model is not None
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
    return {
        "model": str(Path(draft_path).resolve()) if Path(draft_path).exists() else draft_path,
        "fingerprint": model_fingerprint(draft_path),
        "lookahead": args.draft_lookahead,
    }


def _results(args: EvalArguments, model_path: str, run_settings: dict, backend, sets: dict, loaded: dict, command):
    """results.json's content (docs/results_schema.md)."""
    from llmdiet.modeling import counted_files

    assert args.model is not None
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
            "limit": args.max_eval_samples,
        },
        "size": size,
        "sets": sets,
        "demo": any(spec.demo for spec, _, _ in loaded.values()) or args.model.startswith(DEMO_MODEL_PREFIX),
        "provenance": provenance(args.seed, list(command or ["llmdiet", "eval"])),
    }
    results["provenance"]["cwd"] = os.getcwd()
    return results
