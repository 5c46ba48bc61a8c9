"""logit_mse: logit matching, ``(1 - alpha) * CE + alpha * MSE(student logits, teacher logits)``.

Ba & Caruana (2014, "Do deep nets really need to be deep?") trained students to regress the teacher's logits; Kim
et al. (2021, "Comparing Kullback-Leibler divergence and mean squared error loss in knowledge distillation") show
that MSE on logits matches or beats KL at any temperature: it is KL's limit for T -> infinity, it needs no
temperature, and it sees the teacher's raw logit scale, not only its softmax. The squared error is averaged over
the vocabulary (as ``F.mse_loss`` does) and over the valid target tokens, so its size does not grow with the
vocabulary and ``alpha`` weighs it against CE at usual learning rates. The top-k teacher cache keeps log-probabilities, not logits, so this method runs the live teacher.

This module is the worked example of CONTRIBUTING.md's "Add a distillation method": a config, a pure loss
function, a loss step, a card text and one ``register`` call; nothing else in llmdiet changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmdiet.config import check_range
from llmdiet.distill.methods import DistillationMethod, LossStep, register

if TYPE_CHECKING:
    import torch

    from llmdiet.distill.losses import DistillationLoss
    from llmdiet.distill.settings import DistillationArguments


@dataclass
class LogitMSEConfig:
    logit_mse_center: bool = field(
        default=False,
        metadata={
            "help": "logit_mse: subtract each position's mean logit from student and teacher first (logits are "
            "defined up to a constant per position; Kim et al. center them)."
        },
    )
    logit_mse_scale: float = field(
        default=1.0, metadata={"help": "logit_mse: factor on the MSE term before alpha (> 0)."}
    )

    def __post_init__(self) -> None:
        check_range("logit_mse_scale", self.logit_mse_scale, 0.0, low_open=True)


def logit_mse_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float = 0.5,
    num_valid_tokens: int | torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    center: bool = False,
    scale: float = 1.0,
) -> DistillationLoss:
    """``alpha * scale * (1/N) sum_tokens mean_v (z_s - z_t)^2 + (1 - alpha) * CE`` over the N valid target tokens
    (``labels != -100``; under gradient accumulation N = ``num_valid_tokens`` of the whole batch), the squared error
    averaged over the V vocabulary entries (``F.mse_loss``'s mean per token: a summed error grows with V and swamps
    CE at usual learning rates). float32; teacher detached."""
    import torch
    import torch.nn.functional as F

    from llmdiet.distill.losses import IGNORE_INDEX, DistillationLoss

    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ: teacher and student must share the vocabulary"
        )
    mask = labels != IGNORE_INDEX
    count = mask.sum()
    denom = count if num_valid_tokens is None else torch.as_tensor(num_valid_tokens, device=count.device)
    denom = denom.clamp(min=1).float()  # a fully masked batch gives 0, not NaN
    s = student_logits[mask].float()
    t = teacher_logits[mask].detach().float()
    ce = F.cross_entropy(s, labels[mask], reduction="sum", label_smoothing=label_smoothing) / denom
    if center:
        s, t = s - s.mean(-1, keepdim=True), t - t.mean(-1, keepdim=True)
    mse = ((s - t) ** 2).mean(-1).sum() / denom  # mean over the vocabulary, then over the tokens
    loss = alpha * scale * mse + (1.0 - alpha) * ce
    return DistillationLoss(loss=loss, ce=ce.detach(), kd=mse.detach(), num_tokens=count)


def logit_mse_step(step: LossStep) -> tuple[DistillationLoss, Any]:
    outputs = step.student()
    teacher_logits = step.teacher_logits() if step.alpha > 0 else outputs.logits.detach()
    parts = logit_mse_loss(
        outputs.logits,
        teacher_logits,
        step.labels,
        step.alpha,
        num_valid_tokens=step.num_items,
        label_smoothing=step.label_smoothing,
        center=step.config.logit_mse_center,
        scale=step.config.logit_mse_scale,
    )
    return parts, outputs


def card(args: DistillationArguments) -> str:
    centered = "centered " if args.logit_mse_center else ""
    return (
        f"logit_mse (logit matching): loss = alpha * {args.logit_mse_scale:g} * MSE({centered}student logits, "
        f"{centered}teacher logits) + (1 - alpha) * CE, alpha = {args.alpha}"
    )


METHOD = register(
    DistillationMethod(
        name="logit_mse",
        config=LogitMSEConfig,
        loss=logit_mse_step,
        card=card,
        teacher_cache=False,
        no_cache_reason="it matches every logit, and the cache keeps only the top-k log-probs",
        needs_teacher=lambda alpha, config: alpha > 0,
        help="logit matching, alpha*MSE(student logits, teacher logits) + (1-alpha)*CE (Ba & Caruana 2014; no "
        "temperature)",
    )
)
