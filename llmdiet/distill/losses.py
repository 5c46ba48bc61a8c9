"""Distillation losses as pure functions of logits and labels.

All losses work on seq2seq logits of shape (batch, target_len, vocab) whose position t
predicts ``labels[:, t]`` (no shift: the decoder inputs are the labels shifted right).
Positions where ``labels == IGNORE_INDEX`` are padding and are ignored everywhere.

Normalisation: sums over the vocabulary, averaged over the valid target tokens. Under
gradient accumulation pass ``num_valid_tokens`` = the number of valid tokens in the whole
accumulated batch, so that the accumulated gradient equals the full-batch gradient.
Softmaxes and KL are computed in float32 even when the models run in bfloat16.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


@dataclass
class DistillationLoss:
    """The total loss and its parts (``ce`` and ``kd`` are detached, for logging)."""

    loss: torch.Tensor
    ce: torch.Tensor
    kd: torch.Tensor
    num_tokens: torch.Tensor


def _valid_positions(labels: torch.Tensor):
    mask = labels != IGNORE_INDEX
    return mask, mask.sum()


def _denominator(count: torch.Tensor, num_valid_tokens) -> torch.Tensor:
    denom = count if num_valid_tokens is None else torch.as_tensor(num_valid_tokens, device=count.device)
    return denom.clamp(min=1).to(torch.float32)  # a fully masked batch gives 0, not NaN


def kl_divergence_sum(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Sum over rows of KL(p_teacher || p_student) on temperature-softened distributions.

    Inputs are (N, V) rows already restricted to valid positions; computed in float32.
    """
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return (t.exp() * (t - s)).sum()


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float = 0.5,
    temperature: float = 1.0,
    num_valid_tokens: int | torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> DistillationLoss:
    """``alpha * T^2 * KD + (1 - alpha) * CE``.

    KD is the forward KL(teacher || student) of the temperature-softened distributions, summed
    over the vocabulary and averaged over the target tokens where ``labels != -100``; CE is the
    token cross-entropy (at temperature 1) on the same tokens, label-smoothed when ``label_smoothing`` > 0
    (``--label_smoothing_factor``; the KD term is never smoothed). ``alpha`` is the teacher's weight.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} differ; "
            "teacher and student must share the vocabulary and see the same decoder inputs"
        )
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    mask, count = _valid_positions(labels)
    denom = _denominator(count, num_valid_tokens)
    s_valid = student_logits[mask]  # (N, V): select first, then softmax (memory)
    ce = F.cross_entropy(s_valid.float(), labels[mask], reduction="sum", label_smoothing=label_smoothing) / denom
    if alpha > 0:
        kd = kl_divergence_sum(s_valid, teacher_logits[mask].detach(), temperature) / denom
    else:
        kd = torch.zeros((), device=ce.device)
    loss = alpha * temperature**2 * kd + (1.0 - alpha) * ce
    return DistillationLoss(loss=loss, ce=ce.detach(), kd=kd.detach(), num_tokens=count)


def topk_distillation_loss(
    student_logits: torch.Tensor,
    teacher_topk_ids: torch.Tensor,
    teacher_topk_logprobs: torch.Tensor,
    labels: torch.Tensor,
    alpha: float = 0.5,
    temperature: float = 1.0,
    num_valid_tokens: int | torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> DistillationLoss:
    """KD from cached teacher top-k log-probabilities, with a tail bucket for the remaining mass.

    ``teacher_topk_ids``/``teacher_topk_logprobs`` are (B, L, k): the teacher's k most likely
    tokens and their log-probabilities at temperature ``temperature``. The student's distribution
    is collapsed onto the same support plus one "tail" bucket (1 - its mass on the top-k), and the
    KL is taken between the two (k+1)-way distributions. With k = V this equals the full KL.
    """
    mask, count = _valid_positions(labels)
    denom = _denominator(count, num_valid_tokens)
    s_valid = student_logits[mask].float()
    ce = F.cross_entropy(s_valid, labels[mask], reduction="sum", label_smoothing=label_smoothing) / denom
    log_s = F.log_softmax(s_valid / temperature, dim=-1)
    s_top = log_s.gather(-1, teacher_topk_ids[mask].long())  # (N, k)
    t_top = teacher_topk_logprobs[mask].float()
    s_tail = torch.log1p(-s_top.exp().sum(-1).clamp(max=1 - 1e-6))
    t_tail = torch.log1p(-t_top.exp().sum(-1).clamp(max=1 - 1e-6))
    t_all = torch.cat([t_top, t_tail[:, None]], dim=-1)
    s_all = torch.cat([s_top, s_tail[:, None]], dim=-1)
    kd = (t_all.exp() * (t_all - s_all)).sum() / denom
    loss = alpha * temperature**2 * kd + (1.0 - alpha) * ce
    return DistillationLoss(loss=loss, ce=ce.detach(), kd=kd.detach(), num_tokens=count)
