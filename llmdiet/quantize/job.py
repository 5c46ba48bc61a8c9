"""``llmdiet quantize``: quantize a seq2seq model into a directory that ``llmdiet eval`` loads.

    llmdiet quantize --model google/flan-t5-large --method dynamic-int8 --output_dir runs/large-dyn8
    llmdiet quantize --preset demo --method ct2-int8          # offline demo teacher -> runs/quant-demo-ct2-int8
    llmdiet quantize --list_methods                            # methods and whether the installed libraries support them

Methods (see ``docs/quantization.md``): dynamic-int8 (the reference study's), onnx-fp32,
onnx-dynamic-int8, onnx-static-int8, ct2-int8, quanto-int8, torchao-int8, torch-bf16.
The output directory holds the engine files, the tokenizer and ``llmdiet_artifact.json``
(method, backend, parameters, on-disk size, fp32 size, provenance). The work is done by
``llmdiet.quantize``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from llmdiet.config import ConfigError, check_range, parse_config, precheck
from llmdiet.constants import REFERENCE_DATASET, REFERENCE_PREFIX, REFERENCE_TEACHER


@dataclass
class QuantizeArguments:
    model: str | None = field(
        default=None, metadata={"help": "Float model to quantize: hub id, local directory, or llmdiet-demo:teacher."}
    )
    method: str | None = field(default=None, metadata={"help": "Quantization method (see --list_methods)."})
    tokenizer: str | None = field(
        default=None,
        metadata={"help": "Tokenizer directory or hub id, when --model's directory has no tokenizer files."},
    )
    output_dir: str | None = field(
        default=None, metadata={"help": "Output directory; '{method}' in it is replaced by the method name."}
    )
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace a non-empty --output_dir."})
    device: str = field(
        default="cpu", metadata={"help": "Where to quantize: cpu, or cuda for ct2/quanto/torchao/bf16."}
    )
    per_channel: Optional[bool] = field(
        default=None,
        metadata={
            "help": "--per_channel true|false: per-channel int8 weights. Default: per-tensor for dynamic-int8 "
            "(as in the study), per-channel for the ONNX methods."
        },
    )
    calibration_file: str | None = field(
        default=None,
        metadata={
            "help": "Local parallel file (JSONL/JSON/TSV/CSV/Parquet) whose sources calibrate "
            "onnx-static-int8 and quanto-int8. Use training rows, never eval rows."
        },
    )
    calibration_dataset: str = field(
        default=REFERENCE_DATASET, metadata={"help": "Hub dataset for calibration when no --calibration_file is given."}
    )
    calibration_split: str = field(default="train", metadata={"help": "Hub dataset split for calibration."})
    source_column: str = field(default="en", metadata={"help": "Column of --calibration_file holding the source text."})
    source_prefix: Optional[str] = field(
        default=None,
        metadata={
            "help": "Task prefix prepended to each calibration source ('' = none). Default: the reference T5 prefix "
            "for T5-family models, none for other families."
        },
    )
    calibration_start: int = field(default=0, metadata={"help": "First calibration row."})
    max_calibration_samples: int = field(
        default=128, metadata={"help": "Number of calibration sources, from --calibration_start (>= 1)."}
    )
    calibration_batch_size: int = field(default=16, metadata={"help": "Batch size of the calibration translations."})
    calibration_max_new_tokens: int = field(
        default=64, metadata={"help": "Generation length cap while recording calibration activations."}
    )
    skip_bad_rows: bool = field(
        default=False, metadata={"help": "Skip (and count) bad calibration rows instead of failing."}
    )
    seed: int = field(default=0, metadata={"help": "Random seed (calibration sampling)."})
    static_keep_float: list[str] = field(
        default_factory=lambda: ["wo"],
        metadata={
            "help": "onnx-static-int8: layers kept float32 instead of static int8: wo (T5's feed-forward output, whose "
            "activations overflow fixed int8 ranges on real flan-T5 weights; the default) or none."
        },
    )
    list_methods: bool = field(default=False, metadata={"help": "Print the methods and their availability, then exit."})

    def __post_init__(self):
        check_range("calibration_start", self.calibration_start, 0)
        check_range("max_calibration_samples", self.max_calibration_samples, 1)
        check_range("calibration_batch_size", self.calibration_batch_size, 1)
        check_range("calibration_max_new_tokens", self.calibration_max_new_tokens, 1)
        bad = [x for x in self.static_keep_float if x not in ("wo", "none")]
        if bad:
            raise ConfigError(f"--static_keep_float: unknown {bad} (use wo, or none to quantize every layer)")


def demo_preset() -> dict:
    from llmdiet.demo import DEMO_EN_FR

    return {
        "model": "llmdiet-demo:teacher",
        "output_dir": "runs/quant-demo-{method}",
        "calibration_file": str(DEMO_EN_FR),
        "source_column": "en",
        "calibration_start": 0,
        "max_calibration_samples": 128,
    }


def reference_preset() -> dict:
    """The reference study: flan-T5-large with dynamic int8 (3 GB -> 0.9 GB)."""
    return {"model": REFERENCE_TEACHER, "method": "dynamic-int8", "output_dir": "runs/quant-flan-t5-large-{method}"}


PRESETS = {"demo": demo_preset, "reference": reference_preset}


def methods_table() -> str:
    from llmdiet.quantize import METHODS, missing_libraries

    lines = [f"{'method':<18} {'devices':<9} {'available':<28} summary"]
    for name, method in METHODS.items():
        missing = missing_libraries(method)
        status = "yes" if not missing else f"no (needs {', '.join(missing)})"
        lines.append(f"{name:<18} {'/'.join(method.devices):<9} {status:<28} {method.summary}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from llmdiet.quantize import get_method, quantize

    argv = list(sys.argv[1:] if argv is None else argv)
    early = precheck([QuantizeArguments], argv, presets=PRESETS, prog="llmdiet quantize")
    if early.get("method") and not early.get("list_methods"):
        get_method(early["method"], early.get("device", "cpu"))  # unknown or unusable method: before torch loads
    (args,) = parse_config(
        [QuantizeArguments],
        argv,
        presets=PRESETS,
        prog="llmdiet quantize",
        description="Quantize a seq2seq translation model (see docs/quantization.md).",
    )
    if args.list_methods:
        print(methods_table())
        return 0
    if not args.method:
        raise ConfigError("--method is required (see --list_methods)")
    if not args.model:
        raise ConfigError("--model is required (a hub id, a local directory, or --preset demo)")
    if not args.output_dir:
        raise ConfigError("--output_dir is required")
    get_method(args.method, args.device)  # unknown method / missing library / wrong device: before loading anything
    from llmdiet.demo import DEMO_MODEL_PREFIX

    job = build_job(args, argv)
    meta = quantize(job)
    ratio = (
        f" = {meta['size_ratio']:.3f} x the fp32 checkpoint ({meta['fp32_disk_bytes'] / 1e6:.1f} MB)"
        if meta["size_ratio"]
        else ""
    )
    print(
        f"{meta['method']}: wrote {job.out} ({meta['disk_bytes'] / 1e6:.1f} MB on disk{ratio}; "
        f"{meta['parameters']:,} parameters)"
    )
    print(
        f"evaluate it with: llmdiet eval --model {job.out} --eval_set <set or file> --output_dir runs/eval-{job.out.name}"
    )
    if args.model.startswith(DEMO_MODEL_PREFIX):
        from llmdiet.demo import DEMO_BANNER

        print(DEMO_BANNER)
    return 0


def build_job(args: QuantizeArguments, argv: list[str]):
    """The QuantizeJob of the command's arguments (a quantized input is refused before anything loads)."""
    from llmdiet.modeling import resolve_model
    from llmdiet.quantize import CalibrationSpec, QuantizeJob
    from llmdiet.quantize.driver import refuse_quantized_input

    assert args.model and args.method and args.output_dir  # checked by main
    refuse_quantized_input(resolve_model(args.model))
    return QuantizeJob(
        model=resolve_model(args.model),
        method=args.method,
        out=Path(args.output_dir.replace("{method}", args.method)),
        device=args.device,
        per_channel=args.per_channel,
        seed=args.seed,
        overwrite=args.overwrite_output_dir,
        calibration=CalibrationSpec(
            file=args.calibration_file,
            dataset=None if args.calibration_file else args.calibration_dataset,
            dataset_split=args.calibration_split,
            source_column=args.source_column,
            prefix=_calibration_prefix(args),
            start=args.calibration_start,
            count=args.max_calibration_samples,
            skip_bad_rows=args.skip_bad_rows,
        ),
        calibration_batch_size=args.calibration_batch_size,
        calibration_max_new_tokens=args.calibration_max_new_tokens,
        command=["llmdiet", "quantize", *argv],
        tokenizer=args.tokenizer,
        static_keep_float=tuple(x for x in args.static_keep_float if x != "none"),
    )


def _calibration_prefix(args) -> str:
    """``--source_prefix`` as given; else the T5 prefix for T5-family models and none for the others."""
    if args.source_prefix is not None:
        return args.source_prefix
    from llmdiet.artifacts import model_type_of
    from llmdiet.languages import default_prefix
    from llmdiet.modeling import resolve_model

    return default_prefix(model_type_of(resolve_model(args.model)), REFERENCE_PREFIX)


if __name__ == "__main__":
    sys.exit(main())
