"""Shared pieces of the quantization tests: the demo eval rows, fp32 references, artifact building."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from llmdiet.demo import DEMO_EN_FR
from llmdiet.engines import GenerationSettings
from llmdiet.quantize import CalibrationSpec, QuantizeJob, quantize

PREFIX = "translate English to French: "
EVAL_ROWS = (1000, 1064)  # 64 in-domain demo eval rows (never used for calibration)
CALIBRATION_COUNT = 32  # demo training rows 0..31
GREEDY = GenerationSettings(max_new_tokens=64)


def demo_rows(start: int, stop: int) -> tuple[list[str], list[str]]:
    rows = [json.loads(line) for line in DEMO_EN_FR.read_text(encoding="utf-8").splitlines()][start:stop]
    return [PREFIX + r["en"] for r in rows], [r["fr"] for r in rows]


def calibration_spec(prefix: str = PREFIX) -> CalibrationSpec:
    return CalibrationSpec(file=str(DEMO_EN_FR), source_column="en", prefix=prefix, count=CALIBRATION_COUNT)


def build_artifact(teacher: Path, method: str, out: Path, prefix: str = PREFIX, **job_options) -> dict:
    return quantize(QuantizeJob(str(teacher), method, out, calibration=calibration_spec(prefix), **job_options))


def teacher_forced(tokenizer, sources: list[str], references: list[str]) -> dict:
    """Encoder inputs, decoder inputs (references shifted right, T5 style) and the mask of real target tokens."""
    enc = tokenizer(sources, return_tensors="pt", padding=True)
    labels = tokenizer(text_target=references, return_tensors="pt", padding=True)
    start = torch.zeros_like(labels["input_ids"][:, :1])  # T5 decoder start token = pad = 0
    decoder_input_ids = torch.cat([start, labels["input_ids"][:, :-1]], dim=1)
    return {
        "inputs": dict(enc),
        "decoder_input_ids": decoder_input_ids,
        "labels": labels["input_ids"],
        "mask": labels["attention_mask"].bool(),
    }


@torch.inference_mode()
def logits_of(model, batch: dict) -> torch.Tensor:
    return model(**batch["inputs"], decoder_input_ids=batch["decoder_input_ids"]).logits.float()


def logit_errors(logits: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor) -> dict:
    """Largest |difference| over real target positions relative to the largest |fp32 logit|, and argmax agreement."""
    diff = (logits - reference).abs()[mask]
    return {
        "max_rel": (diff.max() / reference.abs()[mask].max()).item(),
        "argmax_agreement": (logits.argmax(-1) == reference.argmax(-1))[mask].float().mean().item(),
    }
