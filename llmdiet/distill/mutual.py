"""Deep mutual learning: two students trained together, each learning from the other (``--method dml``).

:class:`MutualStudents` holds both students as one module, so the Trainer's optimizer, scheduler, gradient
accumulation, DDP and checkpoints cover both: ``forward(..., both=True)`` runs the two students (one DDP forward),
the plain ``forward``/``generate`` are student a's (the in-training BLEU is student a's). Checkpoints and the
final model are saved as two ordinary models, ``student_a/`` and ``student_b/`` (see
:class:`~llmdiet.distill.trainer.DistillationTrainer`), each loadable with ``from_pretrained`` and ``llmdiet eval``.

Student b starts from ``--student_b_model`` if given, else from a copy of student a whose weights are perturbed
by Gaussian noise of ``--dml_noise`` times each tensor's standard deviation (seeded): two identical students fed
the same batches would stay identical and teach each other nothing.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llmdiet.compat import decoder_inputs_from_labels, t5_as_in_4x

STUDENTS = ("student_a", "student_b")


class MutualStudents(nn.Module):
    def __init__(self, student_a: nn.Module, student_b: nn.Module):
        super().__init__()
        self.student_a, self.student_b = student_a, student_b
        self.config = student_a.config
        self.generation_config = student_a.generation_config
        self.main_input_name = student_a.main_input_name

    def forward(
        self,
        input_ids: Any = None,
        attention_mask: Any = None,
        decoder_input_ids: Any = None,
        labels: Any = None,
        both: bool = False,
        **kwargs: Any,
    ) -> Any:
        # the named arguments are the columns the Trainer keeps (it reads this signature)
        inputs = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "decoder_input_ids": decoder_input_ids,
            "labels": labels,
            **kwargs,
        }
        out_a = self.student_a(**inputs)
        return (out_a, self.student_b(**inputs)) if both else out_a

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        student: Any = self.student_a
        return student.generate(*args, **kwargs)

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor) -> torch.Tensor:
        student: Any = self.student_a
        return decoder_inputs_from_labels(student, labels)


def perturbed_copy(model: nn.Module, noise: float, seed: int) -> nn.Module:
    """A copy of ``model`` with every floating tensor w replaced by w + noise * std(w) * N(0, 1) (seeded)."""
    other = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            if p.is_floating_point() and p.numel() > 1:
                p.add_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * (noise * p.std()))
    return other


def save_students(model: MutualStudents, output_dir: str | Path, tokenizer: Any = None, safe: bool = True) -> None:
    for name in STUDENTS:
        target = Path(output_dir) / name
        # transformers 5 always writes safetensors and has no safe_serialization flag
        getattr(model, name).save_pretrained(target, **({} if safe else {"safe_serialization": False}))
        if tokenizer is not None:
            tokenizer.save_pretrained(target)


def load_students(model: MutualStudents, checkpoint: str | Path) -> None:
    """Load both students' weights from a directory written by :func:`save_students`."""
    from transformers import AutoModelForSeq2SeqLM

    for name in STUDENTS:
        saved = t5_as_in_4x(AutoModelForSeq2SeqLM.from_pretrained(Path(checkpoint) / name))
        getattr(model, name).load_state_dict(saved.state_dict())
