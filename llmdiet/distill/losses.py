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
    parts: dict | None = None  # method-specific extra parts (detached), e.g. DKD's tckd/nckd


def _valid_positions(labels: torch.Tensor):
    mask = labels != IGNORE_INDEX
    return mask, mask.sum()


def _denominator(count: torch.Tensor, num_valid_tokens) -> torch.Tensor:
    denom = count if num_valid_tokens is None else torch.as_tensor(num_valid_tokens, device=count.device)
    return denom.clamp(min=1).to(torch.float32)  # a fully masked batch gives 0, not NaN


DIVERGENCES = ("forward_kl", "reverse_kl", "jsd", "skew_kl", "skew_reverse_kl")


def _kl_rows(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row from log-probabilities (0 * log 0 = 0)."""
    p = log_p.exp()
    return torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum(-1)


def _log_mixture(log_a: torch.Tensor, log_b: torch.Tensor, weight_a: float) -> torch.Tensor:
    """log(w * a + (1 - w) * b) computed stably with logsumexp (w in (0, 1))."""
    import math

    return torch.logsumexp(torch.stack([log_a + math.log(weight_a), log_b + math.log1p(-weight_a)]), dim=0)


def token_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, divergence: str = "forward_kl",
                     temperature: float = 1.0, jsd_beta: float = 0.5, skew_alpha: float = 0.1) -> torch.Tensor:
    """Per-row divergence between teacher and student distributions at temperature T (rows: valid tokens, (N, V)).

    * ``forward_kl``: KL(p_T || p_S) (mode-covering; the classic KD term).
    * ``reverse_kl``: KL(p_S || p_T) (mode-seeking).
    * ``jsd``: generalised JSD of the GKD paper / TRL: with M = beta*p_T + (1-beta)*p_S,
      beta*KL(p_T || M) + (1-beta)*KL(p_S || M). Its value vanishes as beta -> 0 or 1, so, as in TRL,
      beta = 0 IS forward KL and beta = 1 IS reverse KL.
    * ``skew_kl``: KL(p_T || a*p_T + (1-a)*p_S); ``skew_reverse_kl``: KL(p_S || a*p_S + (1-a)*p_T)
      (DistiLLM, a = ``skew_alpha``; a = 0 gives the plain KL).
    Computed in float32; the teacher is detached.
    """
    log_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_t = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    if divergence == "forward_kl":
        return _kl_rows(log_t, log_s)
    if divergence == "reverse_kl":
        return _kl_rows(log_s, log_t)
    if divergence == "jsd":
        if not 0.0 <= jsd_beta <= 1.0:
            raise ValueError(f"jsd_beta must be in [0, 1], got {jsd_beta}")
        if jsd_beta == 0.0:
            return _kl_rows(log_t, log_s)
        if jsd_beta == 1.0:
            return _kl_rows(log_s, log_t)
        log_m = _log_mixture(log_t, log_s, jsd_beta)
        return jsd_beta * _kl_rows(log_t, log_m) + (1 - jsd_beta) * _kl_rows(log_s, log_m)
    if divergence in ("skew_kl", "skew_reverse_kl"):
        if not 0.0 <= skew_alpha < 1.0:
            raise ValueError(f"skew_alpha must be in [0, 1), got {skew_alpha}")
        first, second = (log_t, log_s) if divergence == "skew_kl" else (log_s, log_t)
        if skew_alpha == 0.0:
            return _kl_rows(first, second)
        return _kl_rows(first, _log_mixture(first, second, skew_alpha))
    raise ValueError(f"unknown divergence '{divergence}' (use one of {DIVERGENCES})")


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float = 0.5,
    temperature: float = 1.0,
    num_valid_tokens: int | torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    divergence: str = "forward_kl",
    jsd_beta: float = 0.5,
    skew_alpha: float = 0.1,
) -> DistillationLoss:
    """``alpha * T^2 * KD + (1 - alpha) * CE``.

    KD is ``divergence`` (default the forward KL(teacher || student); see :func:`token_divergence`) of the
    temperature-softened distributions, summed over the vocabulary and averaged over the target tokens where
    ``labels != -100``; CE is the
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
        kd = token_divergence(s_valid, teacher_logits[mask], divergence, temperature, jsd_beta, skew_alpha).sum() / denom
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


def dkd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 4.0,
    dkd_alpha: float = 1.0,
    dkd_beta: float = 8.0,
    num_valid_tokens: int | torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> DistillationLoss:
    """Decoupled KD (Zhao et al. 2022) per target token: ``CE + T^2 * (dkd_alpha * TCKD + dkd_beta * NCKD)``.

    With g the gold token: TCKD = KL([p_T(g), 1 - p_T(g)] || [p_S(g), 1 - p_S(g)]) (target vs the rest);
    NCKD = KL(p^_T || p^_S) over the non-gold tokens, p^ = softmax of the logits with the gold logit pushed down
    by 1000 (as the reference implementation). ``kd`` in the result is ``dkd_alpha*TCKD + dkd_beta*NCKD``
    (before T^2); ``tckd``/``nckd`` are in ``parts``.
    """
    mask, count = _valid_positions(labels)
    denom = _denominator(count, num_valid_tokens)
    s_valid, t_valid, gold = student_logits[mask].float(), teacher_logits[mask].detach().float(), labels[mask]
    ce = F.cross_entropy(s_valid, gold, reduction="sum", label_smoothing=label_smoothing) / denom
    log_s = F.log_softmax(s_valid / temperature, dim=-1)
    log_t = F.log_softmax(t_valid / temperature, dim=-1)
    gold_idx = gold[:, None]
    ls_g, lt_g = log_s.gather(-1, gold_idx).squeeze(-1), log_t.gather(-1, gold_idx).squeeze(-1)
    # log(1 - p(g)) stably: log1p(-exp(log p(g))), clamped away from log(0)
    ls_rest = torch.log1p(-ls_g.exp().clamp(max=1 - 1e-7))
    lt_rest = torch.log1p(-lt_g.exp().clamp(max=1 - 1e-7))
    tckd = (lt_g.exp() * (lt_g - ls_g) + lt_rest.exp() * (lt_rest - ls_rest)).sum() / denom
    gold_mask = torch.zeros_like(s_valid, dtype=torch.bool).scatter_(-1, gold_idx, True)
    log_s_ng = F.log_softmax((s_valid - 1000.0 * gold_mask) / temperature, dim=-1)
    log_t_ng = F.log_softmax((t_valid - 1000.0 * gold_mask) / temperature, dim=-1)
    nckd = _kl_rows(log_t_ng, log_s_ng).sum() / denom
    kd = dkd_alpha * tckd + dkd_beta * nckd
    loss = ce + temperature**2 * kd
    return DistillationLoss(loss=loss, ce=ce.detach(), kd=kd.detach(), num_tokens=count,
                            parts={"tckd": tckd.detach(), "nckd": nckd.detach()})
