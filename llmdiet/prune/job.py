"""``llmdiet prune`` and its Python twin ``llmdiet.prune(...)``: prune a model into a new model directory.

    llmdiet prune --preset demo --method width --ffn_sparsity 0.5 --head_sparsity 0.25 --output_dir runs/prune-width
    llmdiet prune --model google/flan-t5-large --method magnitude --sparsity 0.5 --output_dir runs/flan-large-mag50

The output is a ``save_pretrained`` directory (plain ``AutoModelForSeq2SeqLM.from_pretrained`` loads it) with the
tokenizer, ``llmdiet_prune.json`` (method, settings, measured sparsity per matrix, parameters and bytes before and
after, the source model's identity) and a model card. Unstructured and N:M methods also write
``model_sparse.safetensors`` (:mod:`llmdiet.prune.sparse_format`), whose size is the compressed size reported.
A pruned model is a student initialisation: ``llmdiet distill --student_model runs/prune-width`` recovers it
from the unpruned teacher (Minitron's recipe); ``--alpha 0`` is plain fine-tuning.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from llmdiet.config import ConfigError, check_python_types, check_range, parse_config, precheck
from llmdiet.constants import REFERENCE_DATASET, REFERENCE_PREFIX, REFERENCE_TEACHER
from llmdiet.prune.registry import METHODS, get_method

REPORT_FILE = "llmdiet_prune.json"


@dataclass
class PruneArguments:
    model: Optional[str] = field(
        default=None, metadata={"help": "Model to prune: hub id, local directory, or llmdiet-demo:teacher."}
    )
    method: Optional[str] = field(
        default=None, metadata={"help": "Pruning method: " + ", ".join(METHODS), "choices": list(METHODS)}
    )
    output_dir: Optional[str] = field(default=None, metadata={"help": "Directory of the pruned model."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Replace an earlier llmdiet prune output in --output_dir."}
    )
    tokenizer: Optional[str] = field(default=None, metadata={"help": "Tokenizer, when --model's directory has none."})
    sparsity: float = field(
        default=0.5, metadata={"help": "magnitude, wanda: the share of each matrix set to zero, in [0, 1)."}
    )
    importance: str = field(
        default="magnitude",
        metadata={
            "help": "2:4, 4:8: the score within each group (|w|, or Wanda's |w|*||x||).",
            "choices": ["magnitude", "wanda"],
        },
    )
    ffn_sparsity: float = field(
        default=0.5, metadata={"help": "width: the share of gated-FFN neurons removed from every layer, in [0, 1)."}
    )
    head_sparsity: float = field(
        default=0.0, metadata={"help": "width: the share of attention heads removed from every attention, in [0, 1)."}
    )
    depth_sparsity: float = field(
        default=0.25, metadata={"help": "depth: the share of blocks removed from each stack, in [0, 1)."}
    )
    vocab_file: Optional[list[str]] = field(
        default=None, metadata={"help": "vocab: parallel files whose texts (both columns) keep their tokens."}
    )
    max_vocab_samples: Optional[int] = field(
        default=None, metadata={"help": "vocab: read only the first N rows of each --vocab_file (its training rows)."}
    )
    calibration_file: Optional[str] = field(
        default=None,
        metadata={"help": "Parallel file of training rows whose activations score wanda, width and depth."},
    )
    calibration_dataset: str = field(
        default=REFERENCE_DATASET,
        metadata={"help": "Hub dataset whose first rows calibrate when no --calibration_file is given."},
    )
    calibration_split: str = field(default="train", metadata={"help": "Split of --calibration_dataset."})
    source_column: str = field(default="en", metadata={"help": "Source column of --calibration_file/--vocab_file."})
    target_column: str = field(default="fr", metadata={"help": "Target column of --calibration_file/--vocab_file."})
    source_prefix: Optional[str] = field(
        default=None,
        metadata={"help": "Task prefix of the sources ('' = none). Default: the T5 prefix for T5-family models."},
    )
    max_calibration_samples: int = field(default=128, metadata={"help": "Calibration rows, the first of the file."})
    calibration_batch_size: int = field(default=16, metadata={"help": "Batch size of the calibration passes."})
    seed: int = field(default=0, metadata={"help": "Seed (recorded; every method here is deterministic)."})

    def __post_init__(self) -> None:
        for name in ("sparsity", "ffn_sparsity", "head_sparsity", "depth_sparsity"):
            check_range(name, getattr(self, name), 0.0, 1.0, high_open=True)
        check_range("max_calibration_samples", self.max_calibration_samples, 1)
        check_range("calibration_batch_size", self.calibration_batch_size, 1)
        check_range("max_vocab_samples", self.max_vocab_samples, 1)
        if isinstance(self.vocab_file, str):
            self.vocab_file = [self.vocab_file]


def demo_preset() -> dict:
    from llmdiet.demo import DEMO_EN_FR

    return {
        "model": "llmdiet-demo:teacher",
        "calibration_file": str(DEMO_EN_FR),
        "output_dir": "runs/prune-demo-{method}",
    }


def reference_preset() -> dict:
    return {"model": REFERENCE_TEACHER, "output_dir": "runs/prune-flan-t5-large-{method}"}


PRESETS = {"demo": demo_preset, "reference": reference_preset}


def prune(args: PruneArguments, command: list[str] | None = None) -> dict:
    """Prune ``args.model`` into ``args.output_dir``; returns the report written to ``llmdiet_prune.json``."""
    from llmdiet.artifacts import model_type_of
    from llmdiet.modeling import load_seq2seq, resolve_model

    if not (args.model and args.method and args.output_dir):
        raise ConfigError("--model, --method and --output_dir are required (or use --preset demo)")
    path = resolve_model(args.model)
    method = get_method(args.method, model_type_of(path))
    out = Path(args.output_dir.replace("{method}", args.method.replace(":", "-")))
    _check_output_dir(out, args.overwrite_output_dir)
    model, tokenizer = load_seq2seq(path, tokenizer_path=args.tokenizer)
    before = _size(model)
    model, tokenizer, details = method.run()(model, tokenizer, args, _calibration(args, model))
    return _publish(model, tokenizer, out, args, method, path, before, details, command)


def _calibration(args: PruneArguments, model):
    from llmdiet.languages import default_prefix
    from llmdiet.prune.calibration import CalibrationRows

    prefix = args.source_prefix
    if prefix is None:
        prefix = default_prefix(model.config.model_type, REFERENCE_PREFIX)
    return CalibrationRows(
        args.calibration_file,
        args.source_column,
        args.target_column,
        prefix,
        args.max_calibration_samples,
        args.calibration_batch_size,
        dataset=None if args.calibration_file else args.calibration_dataset,
        split=args.calibration_split,
    )


def _size(model) -> dict:
    return {"parameters": sum(p.numel() for p in model.parameters())}


def _check_output_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--output_dir {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not (out / REPORT_FILE).is_file():
            raise ConfigError(f"--output_dir {out}: not empty and not an llmdiet prune output; choose another")
        if not overwrite:
            raise ConfigError(
                f"--output_dir {out}: holds a pruned model (pass --overwrite_output_dir true to replace it)"
            )


def _publish(model, tokenizer, out: Path, args, method, source: str, before: dict, details: dict, command) -> dict:
    """Write the model, tokenizer, sparse file, report and card into a partial directory, then move it into place."""
    from llmdiet.fingerprint import model_identity
    from llmdiet.provenance import provenance
    from llmdiet.prune.sparse_format import SPARSE_FILE, save_sparse
    from llmdiet.prune.unstructured import measured_sparsity, prunable_linears

    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    report: dict[str, Any] = {
        "method": method.name,
        "kind": method.kind,
        "source_model": source,
        "source_identity": model_identity(source) if Path(source).exists() else {"hub_id": source},
        "settings": {
            k: getattr(args, k) for k in ("sparsity", "importance", "ffn_sparsity", "head_sparsity", "depth_sparsity")
        },
        **details,
        "parameters": [before["parameters"], _size(model)["parameters"]],
        "dense_bytes": (partial / "model.safetensors").stat().st_size,
        "sparsity": measured_sparsity(model),
        "provenance": provenance(args.seed, list(command or ["llmdiet", "prune"])),
    }
    if method.kind in ("unstructured", "semi-structured"):
        names = {f"{name}.weight" for name in prunable_linears(model)}
        report["sparse_file"] = SPARSE_FILE
        report["sparse_bytes"] = save_sparse(model.state_dict(), names, partial / SPARSE_FILE)
    (partial / REPORT_FILE).write_text(json.dumps(report, indent=2, default=str))
    _write_card(partial, report)
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(partial, out)
    report["output_dir"] = str(out)
    return report


def _write_card(directory: Path, report: dict) -> None:
    from llmdiet.model_card import write_model_card

    size = {
        "parameters (before -> after)": f"{report['parameters'][0]:,} -> {report['parameters'][1]:,}",
        "dense model.safetensors (MB)": f"{report['dense_bytes'] / 1e6:.2f}",
        "sparse file (MB)": f"{report['sparse_bytes'] / 1e6:.2f}" if report.get("sparse_bytes") else None,
        "zeros in the prunable weights": f"{100 * report['sparsity']['overall']:.2f}%",
    }
    write_model_card(
        directory,
        title=f"{Path(str(report['source_model'])).name}, pruned ({report['method']})",
        kind="pruning",
        base_model=str(report["source_model"]),
        how=f"`llmdiet prune --method {report['method']}`: {METHODS[report['method']].summary}.",
        command=" ".join(report["provenance"].get("command") or ["llmdiet", "prune"]),
        size=size,
        provenance=report["provenance"],
        tags=[report["method"]],
        loading="```python\nfrom transformers import AutoModelForSeq2SeqLM, AutoTokenizer\n"
        'model = AutoModelForSeq2SeqLM.from_pretrained("<this directory>")\n'
        'tokenizer = AutoTokenizer.from_pretrained("<this directory>")\n```\n'
        "Recover it with distillation from the unpruned model: `llmdiet distill --student_model <this directory>`.",
        demo=str(report["source_model"]).startswith("llmdiet-demo:") or "/demo/models/" in str(report["source_model"]),
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    precheck([PruneArguments], argv, presets=PRESETS, prog="llmdiet prune")
    (args,) = parse_config(
        [PruneArguments],
        argv,
        presets=PRESETS,
        prog="llmdiet prune",
        description="Prune a seq2seq translation model (unstructured, 2:4, width, depth, vocabulary).",
    )
    report = prune(args, command=["llmdiet", "prune", *argv])
    params = report["parameters"]
    print(
        f"{report['method']}: wrote {report['output_dir']} ({params[0]:,} -> {params[1]:,} parameters, "
        f"{100 * report['sparsity']['overall']:.1f}% zeros in the prunable weights, "
        f"{report['dense_bytes'] / 1e6:.2f} MB dense"
        + (f", {report['sparse_bytes'] / 1e6:.2f} MB sparse" if report.get("sparse_bytes") else "")
        + ")"
    )
    print(f"recover it: llmdiet distill --student_model {report['output_dir']} (teacher: the unpruned model)")
    return 0


def prune_model(model: str, method: str, output_dir: str | Path, **options: Any) -> dict:
    """``llmdiet prune`` from Python, with its flags' names: ``llmdiet.prune("llmdiet-demo:teacher", "width",
    "runs/p", ffn_sparsity=0.5, calibration_file=...)``; returns the report (``llmdiet_prune.json``)."""
    from llmdiet.config import ArgumentTypeError

    for name, value in (("model", model), ("method", method), ("output_dir", output_dir)):
        if not isinstance(value, (str, Path)):
            raise ArgumentTypeError(f"llmdiet.prune(): {name} must be a string or path, got {value!r}")
    check_python_types("llmdiet.prune()", [PruneArguments], options)
    args = PruneArguments(model=str(model), method=method, output_dir=str(output_dir), **options)
    return prune(args, command=["llmdiet.prune", str(model), method, str(output_dir)])


if __name__ == "__main__":
    sys.exit(main())
