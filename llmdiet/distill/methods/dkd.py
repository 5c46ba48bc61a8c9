"""dkd: decoupled knowledge distillation (Zhao et al., CVPR 2022), per target token.

``CE + T^2 * (dkd_alpha * TCKD + dkd_beta * NCKD)``: TCKD is the binary KL of "gold token vs the rest",
NCKD the KL of the distributions over the non-gold tokens. ``--alpha`` is not used. From the teacher cache
both parts are taken on the top-k + tail distributions (:func:`llmdiet.distill.losses.topk_dkd_loss`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmdiet.config import check_range
from llmdiet.distill.methods import DistillationMethod, LossStep, register

if TYPE_CHECKING:
    from llmdiet.distill.losses import DistillationLoss
    from llmdiet.distill.settings import DistillationArguments


@dataclass
class DKDConfig:
    dkd_alpha: float = field(default=1.0, metadata={"help": "DKD weight of TCKD (target vs rest), >= 0."})
    dkd_beta: float = field(default=8.0, metadata={"help": "DKD weight of NCKD (non-target distribution), >= 0."})

    def __post_init__(self) -> None:
        check_range("dkd_alpha", self.dkd_alpha, 0.0)
        check_range("dkd_beta", self.dkd_beta, 0.0)


def dkd_step(step: LossStep) -> tuple[DistillationLoss, Any]:
    from llmdiet.distill.losses import dkd_loss, topk_dkd_loss

    outputs = step.student()
    options = {"dkd_alpha": step.config.dkd_alpha, "dkd_beta": step.config.dkd_beta}
    if step.cached:
        parts = topk_dkd_loss(
            outputs.logits,
            step.cached["teacher_topk_ids"],
            step.cached["teacher_topk_logprobs"],
            step.labels,
            step.temperature,
            num_valid_tokens=step.num_items,
            label_smoothing=step.label_smoothing,
            **options,
        )
    else:
        parts = dkd_loss(
            outputs.logits,
            step.teacher_logits(),
            step.labels,
            step.temperature,
            num_valid_tokens=step.num_items,
            label_smoothing=step.label_smoothing,
            **options,
        )
    return parts, outputs


def card(args: DistillationArguments) -> str:
    return (
        f"dkd (decoupled KD): loss = CE + T^2 * ({args.dkd_alpha} * TCKD + {args.dkd_beta} * NCKD), "
        f"T = {args.temperature}"
    )


METHOD = register(
    DistillationMethod(
        name="dkd",
        config=DKDConfig,
        loss=dkd_step,
        card=card,
        teacher_cache=True,
        needs_teacher=lambda alpha, config: True,
        help="decoupled KD, CE + T^2*(dkd_alpha*TCKD + dkd_beta*NCKD) (alpha unused)",
    )
)
