"""Builds the models the benchmarks load: random-init flan-T5 shapes and their quantized artifacts.

Worker (one fresh process per artifact, see ``bench/jobs.py``)::

    {"kind": "random", "shape": "flan-t5-large", "out": DIR, "tokenizer_dir": DIR}
    {"kind": "quantize", "method": "dynamic-int8", "model": DIR, "out": DIR, "device": "cpu",
     "calibration_count": 32, "calibration_max_new_tokens": 40}

Quantized artifacts are made by ``llmdiet quantize`` itself (``llmdiet.quantize.main``), so the
benchmark measures exactly what users get. Static calibration reads demo *training* rows
(``llmdiet/demo/data/demo_en_fr.jsonl`` rows from 0), never the benchmark sources. A directory that
already holds a finished artifact of the same method is reused when the spec says ``reuse``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from llmdiet.engines import ARTIFACT_FILE

from .jobs import worker_main

# Methods whose quantizer needs calibration sources.
CALIBRATED = {"onnx-static-int8", "quanto-int8"}


def build_random(spec: dict) -> dict:
    from llmdiet.modeling import directory_bytes

    from .workload import load_tokenizer, save_random_model, shape_parameters

    start = time.perf_counter()
    tokenizer = load_tokenizer(spec["tokenizer_dir"])
    out = save_random_model(spec["shape"], spec["out"], tokenizer, seed=spec.get("seed", 0))
    return {
        "dir": str(out),
        "shape": spec["shape"],
        "parameters": shape_parameters(spec["shape"], tokenizer),
        "disk_bytes": directory_bytes(out),
        "build_s": time.perf_counter() - start,
    }


def quantize_command(spec: dict) -> list[str]:
    """The ``llmdiet quantize`` arguments for ``spec`` (recorded in the results as the exact command)."""
    from llmdiet.demo import DEMO_EN_FR

    argv = [
        "--model",
        spec["model"],
        "--method",
        spec["method"],
        "--output_dir",
        spec["out"],
        "--overwrite_output_dir",
        "--device",
        spec.get("device", "cpu"),
    ]
    if spec["method"] in CALIBRATED:
        argv += [
            "--calibration_file",
            str(DEMO_EN_FR),
            "--source_column",
            "en",
            "--calibration_start",
            "0",
            "--max_calibration_samples",
            str(spec.get("calibration_count", 32)),
            "--calibration_max_new_tokens",
            str(spec.get("calibration_max_new_tokens", 40)),
        ]
    return argv


def build_quantized(spec: dict) -> dict:
    from llmdiet.quantize.job import main as quantize_main

    out = Path(spec["out"])
    meta_path = out / ARTIFACT_FILE
    argv = quantize_command(spec)
    if spec.get("reuse") and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("method") == spec["method"] and Path(meta.get("source_model", "")) == Path(spec["model"]):
            return _summary(meta, out, argv, build_s=None, reused=True)
    start = time.perf_counter()
    code = quantize_main(argv)
    if code:
        raise RuntimeError(f"llmdiet quantize exited with code {code}")
    return _summary(json.loads(meta_path.read_text()), out, argv, build_s=time.perf_counter() - start, reused=False)


def _summary(meta: dict, out: Path, argv: list[str], build_s: float | None, reused: bool) -> dict:
    keep = (
        "method",
        "backend",
        "parameters",
        "disk_bytes",
        "fp32_disk_bytes",
        "size_ratio",
        "weights",
        "activations",
        "quantization",
        "instruction_set",
        "per_channel",
        "calibration",
        "kept_float",
        "dtype",
    )
    return {
        "dir": str(out),
        **{k: meta[k] for k in keep if k in meta},
        "build_s": build_s,
        "reused": reused,
        "command": "llmdiet quantize " + " ".join(argv),
    }


def run(spec: dict) -> dict:
    if spec["kind"] == "random":
        return build_random(spec)
    if spec["kind"] == "quantize":
        return build_quantized(spec)
    raise ValueError(f"unknown artifact kind '{spec['kind']}'")


if __name__ == "__main__":
    raise SystemExit(worker_main(run))
