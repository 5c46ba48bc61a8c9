"""The driver behind ``llmdiet quantize``: load the float model, run the method's artifact function (named by
its :mod:`llmdiet.quantize.registry` row) in a partial directory, describe and publish the artifact."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmdiet.config import ConfigError
from llmdiet.constants import REFERENCE_DATASET, REFERENCE_PREFIX
from llmdiet.quantize.calibration import CalibrationSpec, load_calibration_sources
from llmdiet.quantize.registry import METHODS, Method, get_method

logger = logging.getLogger(__name__)


@dataclass
class QuantizeJob:
    model: str  # hub id or local directory (float weights)
    method: str
    out: Path
    device: str = "cpu"
    per_channel: bool | None = (
        None  # None: the method's default (dynamic-int8: per-tensor as in the study; ONNX: per-channel)
    )
    calibration: CalibrationSpec = field(default_factory=CalibrationSpec)
    calibration_batch_size: int = 16
    calibration_max_new_tokens: int = 64
    seed: int = 0
    overwrite: bool = False
    command: list[str] | None = None  # recorded in the artifact's provenance
    tokenizer: str | None = None  # tokenizer directory or hub id when the model directory has none
    static_keep_float: tuple[str, ...] = ("wo",)  # onnx-static-int8: layers kept float32 (T5-safe)


def quantize(job: QuantizeJob) -> dict:
    """Run ``job``: load, quantize, save to ``job.out``, write ``llmdiet_artifact.json``; returns the artifact dict."""
    import torch

    from llmdiet.locking import file_lock

    method = get_method(job.method, job.device)
    torch.manual_seed(job.seed)
    sources = load_calibration_sources(job.calibration) if method.calibrated else None
    out = Path(job.out)
    # one run per --output_dir at a time (two used to both "succeed", the later one silently replacing the other): the
    # lock is a file beside --output_dir, since --output_dir itself is replaced by a rename
    with file_lock(out.parent / f".{out.name}.lock", "llmdiet quantize", shown=out, remove=True):
        return _quantize_locked(job, method, sources)


def _quantize_locked(job: QuantizeJob, method, sources) -> dict:
    import torch

    from llmdiet.artifacts import (
        check_output_dir,
        fp32_disk_bytes,
        publish_partial_dir,
        start_partial_dir,
        temporary_files_under,
        write_artifact,
    )
    from llmdiet.modeling import load_seq2seq

    out = check_output_dir(job.out, job.overwrite)  # before anything is loaded
    model, tokenizer = load_seq2seq(job.model, dtype=torch.float32, tokenizer_path=job.tokenizer)
    parameters = sum(p.numel() for p in model.parameters())
    fp32_bytes = fp32_disk_bytes(job.model, model.config)
    model_type = model.config.model_type
    if method.kind == "files":
        model = None  # these exporters load the checkpoint again by path; free the float copy first
    # Everything is written into a hidden directory beside --output_dir and renamed into place when complete:
    # a failed run leaves nothing behind, a killed one only a stale ``.NAME.partial-PID`` that the next run removes.
    partial = start_partial_dir(out)
    try:
        with temporary_files_under(partial / ".tmp"):  # never in /tmp: a killed run's leftovers stay in partial/
            extra = _run_method(method, job, model, tokenizer, sources, partial, model_type)
        if method.calibrated:
            extra["calibration"] = {
                **job.calibration.describe(),
                "rows_used": len(sources),
                "batch_size": job.calibration_batch_size,
                "max_new_tokens": job.calibration_max_new_tokens,
            }
        meta = write_artifact(
            partial,
            method=method.name,
            backend=method.backend,
            source_model=job.model,
            parameters=parameters,
            fp32_bytes=fp32_bytes,
            seed=job.seed,
            command=job.command,
            model_type=model_type,
            **extra,
        )
        write_artifact_card(partial, meta)
        publish_partial_dir(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    logger.info(
        "%s: %s -> %s (%.1f MB on disk%s)",
        method.name,
        job.model,
        out,
        meta["disk_bytes"] / 1e6,
        f", {meta['size_ratio']:.3f} x fp32" if meta["size_ratio"] else "",
    )
    return meta


LLMDIET_LOADING = (
    '```python\nimport llmdiet\ntranslator = llmdiet.load("{out}")\n'
    'translator.translate(["{example}"])\n```\n'
    "(This format is llmdiet's: {reason})"
)


def write_artifact_card(directory: Path, meta: dict) -> Path:
    """The artifact's model card: method, command, size vs fp32, how to load it, provenance."""
    from llmdiet.demo import DEMO_MODEL_PREFIX, SHIPPED_MODELS_DIR
    from llmdiet.model_card import write_model_card

    method = meta["method"]
    native = METHODS[method].loading
    ours = (
        LLMDIET_LOADING.replace("{example}", REFERENCE_PREFIX + "Hello.")
        .replace("{out}", "<this directory>")
        .replace("{reason}", METHODS[method].no_native_reason or "no other library loads it.")
    )
    loading = ours
    if native:
        from llmdiet.languages import default_prefix

        loading = (
            native.replace("{out}", "<this directory>").replace(
                "{prefix}", default_prefix(meta.get("model_type"), REFERENCE_PREFIX)
            )
            + "\n\nor, with llmdiet's harness settings:\n\n"
            + ours.split("\n(This")[0]
        )
    source = meta["source_model"]
    demo = str(source).startswith(str(SHIPPED_MODELS_DIR)) or str(source).startswith(DEMO_MODEL_PREFIX)
    size = {
        "parameters": f"{meta['parameters']:,}",
        "disk (MB)": f"{meta['disk_bytes'] / 1e6:.1f}",
        "fp32 checkpoint (MB)": f"{meta['fp32_disk_bytes'] / 1e6:.1f}" if meta.get("fp32_disk_bytes") else None,
        "size vs fp32": f"{meta['size_ratio']:.3f}x" if meta.get("size_ratio") else None,
    }
    return write_model_card(
        directory,
        title=f"{Path(source).name or source}, {method} (llmdiet)",
        kind="quantization",
        base_model=source,
        tags=[method],
        demo=demo,
        how=f"`{source}` quantized by llmdiet with `{method}`: {METHODS[method].summary}.",
        command=meta["provenance"]["command"]
        if isinstance(meta["provenance"]["command"], str)
        else " ".join(meta["provenance"]["command"]),
        size=size,
        provenance=meta["provenance"],
        loading=loading,
    )


def _run_method(method: Method, job: QuantizeJob, model, tokenizer, sources, out: Path, model_type: str) -> dict:
    """The method's own artifact function (its registry row names it)."""
    return method.function("make")(job, model, tokenizer, sources, out, model_type)


def refuse_quantized_input(model: str) -> None:
    """An llmdiet artifact (it has ``llmdiet_artifact.json``) is already quantized: name it and its source, before
    anything loads (before: "its config.json has no known model_type" for a CTranslate2 artifact)."""
    import json

    from llmdiet.artifacts import ARTIFACT_FILE

    meta_path = Path(model) / ARTIFACT_FILE
    if not meta_path.is_file():
        return
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = {}
    raise ConfigError(
        f"--model {model}: this is already a quantized artifact ({meta.get('method', 'llmdiet artifact')} of "
        f"{meta.get('source_model', 'another model')}); quantize its float source model instead"
    )


def _api_options(options: dict, deprecated: dict) -> dict:
    """``llmdiet.quantize()``'s options with old keyword names renamed (a FutureWarning each) and types checked."""
    from llmdiet.config import ArgumentTypeError, rename_deprecated_kwargs

    names = {"output_dir", "source_column", "source_prefix", "max_calibration_samples", "overwrite_output_dir"}
    renamed = rename_deprecated_kwargs("llmdiet.quantize()", deprecated, names)
    unknown = sorted(set(renamed) - names)
    if unknown:
        raise ArgumentTypeError(f"llmdiet.quantize(): unknown option(s) {unknown}")
    options = {**options, **renamed}
    checks: list[tuple[str, Any]] = [
        ("model", (str, Path)),
        ("method", str),
        ("output_dir", (str, Path)),
        ("max_calibration_samples", int),
        ("seed", int),
        ("overwrite_output_dir", bool),
    ]
    for name, kind in checks:
        value = options[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ArgumentTypeError(
                f"llmdiet.quantize(): {name} must be {getattr(kind, '__name__', 'a path')}, got {value!r}"
            )
    return options


def quantize_model(
    model: str,
    method: str,
    output_dir: str | Path | None = None,
    *,
    calibration_file: str | None = None,
    source_column: str = "en",
    source_prefix: str | None = None,
    max_calibration_samples: int = 128,
    device: str = "cpu",
    per_channel: bool | None = None,
    overwrite_output_dir: bool = False,
    tokenizer: str | None = None,
    seed: int = 0,
    **deprecated: Any,
) -> dict:
    """``llmdiet quantize`` from Python, with its flags' names; returns the artifact record
    (``llmdiet_artifact.json``). ``source_prefix`` None: the T5 prefix for T5-family models, none for others
    ('' = none). The old names (``out``, ``overwrite``, ``calibration_*``) still work, with a FutureWarning."""
    o = _api_options({k: v for k, v in locals().items() if k != "deprecated"}, deprecated)  # the arguments only
    from llmdiet.artifacts import model_type_of
    from llmdiet.languages import default_prefix
    from llmdiet.modeling import resolve_model

    model, output_dir, source_prefix = o["model"], o["output_dir"], o["source_prefix"]
    refuse_quantized_input(resolve_model(str(model)))
    if source_prefix is None:
        source_prefix = default_prefix(model_type_of(resolve_model(str(model))), REFERENCE_PREFIX)
    get_method(method, device)
    calibration = CalibrationSpec(
        file=calibration_file,
        dataset=None if calibration_file else REFERENCE_DATASET,
        source_column=o["source_column"],
        prefix=source_prefix,
        count=o["max_calibration_samples"],
    )
    return quantize(
        QuantizeJob(
            resolve_model(str(model)),
            method,
            Path(output_dir),
            device=device,
            per_channel=per_channel,
            calibration=calibration,
            seed=seed,
            overwrite=o["overwrite_output_dir"],
            tokenizer=tokenizer,
            command=["llmdiet.quantize", str(model), method, str(output_dir)],
        )
    )
