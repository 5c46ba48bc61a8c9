"""kd: classic knowledge distillation, ``alpha * T^2 * D(teacher, student) + (1 - alpha) * CE``.

D is a token divergence (:data:`llmdiet.distill.losses.DIVERGENCES`): the forward KL of Hinton et al. by
default, or reverse KL, generalised JSD, skew KL. ``alpha = 0`` is plain fine-tuning (no teacher forward).
From the teacher cache the divergence is taken on the (k+1)-way top-k + tail distributions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmdiet.config import check_range
from llmdiet.constants import DIVERGENCES
from llmdiet.distill.methods import DistillationMethod, LossStep, register

if TYPE_CHECKING:
    from llmdiet.distill.losses import DistillationLoss
    from llmdiet.distill.settings import DistillationArguments


@dataclass
class KDConfig:
    divergence: str = field(
        default="forward_kl",
        metadata={
            "help": "kd's token divergence: forward_kl (classic), reverse_kl, jsd (with "
            "--jsd_beta; 0 = forward, 1 = reverse KL), skew_kl, skew_reverse_kl "
            "(with --skew_alpha).",
            "choices": list(DIVERGENCES),
        },
    )
    jsd_beta: float = field(default=0.5, metadata={"help": "Interpolation beta of --divergence jsd, in [0, 1]."})
    skew_alpha: float = field(default=0.1, metadata={"help": "Skew a of skew_kl / skew_reverse_kl, in [0, 1)."})

    def __post_init__(self) -> None:
        check_range("jsd_beta", self.jsd_beta, 0.0, 1.0)
        check_range("skew_alpha", self.skew_alpha, 0.0, 1.0, high_open=True)

    def divergence_options(self) -> dict:
        return {"divergence": self.divergence, "jsd_beta": self.jsd_beta, "skew_alpha": self.skew_alpha}


def kd_loss(step: LossStep) -> tuple[DistillationLoss, Any]:
    """The kd objective of one batch (also gkd's reference batches)."""
    from llmdiet.distill.losses import distillation_loss, topk_distillation_loss

    outputs = step.student()
    options = step.config.divergence_options()
    if step.cached and step.alpha > 0:
        parts = topk_distillation_loss(
            outputs.logits,
            step.cached["teacher_topk_ids"],
            step.cached["teacher_topk_logprobs"],
            step.labels,
            step.alpha,
            step.temperature,
            num_valid_tokens=step.num_items,
            label_smoothing=step.label_smoothing,
            **options,
        )
        return parts, outputs
    # alpha == 0: plain fine-tuning, the teacher is neither loaded nor run
    teacher_logits = step.teacher_logits() if step.alpha > 0 else outputs.logits.detach()
    parts = distillation_loss(
        outputs.logits,
        teacher_logits,
        step.labels,
        step.alpha,
        step.temperature,
        num_valid_tokens=step.num_items,
        label_smoothing=step.label_smoothing,
        **options,
    )
    return parts, outputs


def divergence_text(config: KDConfig) -> str:
    if config.divergence == "forward_kl":
        return "KL(teacher || student)"
    if config.divergence == "reverse_kl":
        return "KL(student || teacher)"
    if config.divergence == "jsd":
        return f"JSD_beta(teacher, student) with beta = {config.jsd_beta}"
    return f"{config.divergence}(teacher, student) with skew {config.skew_alpha}"


def card(args: DistillationArguments) -> str:
    if args.alpha == 0:
        return "fine-tuned on the references (alpha = 0, no teacher)"
    return (
        f"kd: loss = alpha * T^2 * {divergence_text(args)} + (1 - alpha) * CE, alpha = {args.alpha}, "
        f"T = {args.temperature}"
    )


METHOD = register(
    DistillationMethod(
        name="kd",
        config=KDConfig,
        loss=kd_loss,
        card=card,
        teacher_cache=True,
        needs_teacher=lambda alpha, config: alpha > 0,
        help="alpha*T^2*divergence(teacher, student) + (1-alpha)*CE (--divergence; alpha 0 = plain fine-tuning)",
    )
)
