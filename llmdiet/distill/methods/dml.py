"""dml: deep mutual learning (Zhang et al., CVPR 2018) of two students, with an optional teacher term.

Each student minimises ``(1 - alpha) * CE + alpha * T^2 * KL(peer || self)`` (the peer detached), plus
``dml_teacher_weight * T^2 * KL(teacher || self)`` when that weight is > 0. Both students train as one module
(:class:`llmdiet.distill.mutual.MutualStudents`) and are saved as ``student_a/`` and ``student_b/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from llmdiet.config import check_range
from llmdiet.distill.methods import DistillationMethod, LossStep, register

if TYPE_CHECKING:
    from llmdiet.distill.losses import DistillationLoss
    from llmdiet.distill.settings import DistillationArguments


@dataclass
class DMLConfig:
    dml_teacher_weight: float = field(
        default=0.0,
        metadata={
            "help": "dml: weight of an extra T^2*KL(teacher || student) term per student (>= 0; 0 = no teacher)."
        },
    )
    student_b_model: Optional[str] = field(
        default=None,
        metadata={"help": "dml: the second student (default: a copy of the first, perturbed by --dml_noise)."},
    )
    dml_noise: float = field(
        default=0.01,
        metadata={
            "help": "dml: std of the Gaussian perturbation of student b's "
            "weights, relative to each tensor's std (>= 0)."
        },
    )

    def __post_init__(self) -> None:
        check_range("dml_teacher_weight", self.dml_teacher_weight, 0.0)
        check_range("dml_noise", self.dml_noise, 0.0)


def dml_step(step: LossStep) -> tuple[DistillationLoss, Any]:
    from llmdiet.distill.losses import mutual_learning_loss

    out_a, out_b = step.student(both=True)
    weight = step.config.dml_teacher_weight
    teacher_logits = step.teacher_logits() if weight > 0 and step.trainer.teacher is not None else None
    parts = mutual_learning_loss(
        out_a.logits,
        out_b.logits,
        step.labels,
        step.alpha,
        step.temperature,
        num_valid_tokens=step.num_items,
        label_smoothing=step.label_smoothing,
        teacher_logits=teacher_logits,
        teacher_weight=weight,
    )
    return parts, out_a


def build_model(student: Any, args: Any, seed: int) -> Any:
    """Both students as one module: student b from --student_b_model, else a perturbed copy of student a."""
    from llmdiet.distill.mutual import MutualStudents, perturbed_copy
    from llmdiet.modeling import load_seq2seq, resolve_model

    if args.student_b_model:
        student_b, _ = load_seq2seq(resolve_model(args.student_b_model))
    else:
        student_b = perturbed_copy(student, args.dml_noise, seed + 1)
    return MutualStudents(student, student_b)


def card(args: DistillationArguments) -> str:
    teacher = (
        f" + {args.dml_teacher_weight} * T^2 * KL(teacher || self)"
        if args.dml_teacher_weight > 0
        else " (no teacher term)"
    )
    return (
        f"dml (deep mutual learning of two students): each loss = (1 - alpha) * CE + alpha * T^2 * "
        f"KL(peer || self){teacher}, alpha = {args.alpha}, T = {args.temperature}"
    )


METHOD = register(
    DistillationMethod(
        name="dml",
        config=DMLConfig,
        loss=dml_step,
        card=card,
        teacher_cache=False,
        no_cache_reason="it trains two students against each other's live outputs",
        build_model=build_model,
        students=("student_a", "student_b"),
        modifiers=("shrink",),
        needs_teacher=lambda alpha, config: config.dml_teacher_weight > 0,
        help="deep mutual learning of two students (student_a/, student_b/), each (1-alpha)*CE + alpha*T^2*KL(peer || "
        "self) [+ --dml_teacher_weight teacher term]",
    )
)
