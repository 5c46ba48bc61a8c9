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

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from llmdiet.constants import DIVERGENCES

IGNORE_INDEX = -100


@dataclass
class DistillationLoss:
    """The total loss and its parts (``ce`` and ``kd`` are detached, for logging)."""

    loss: torch.Tensor
    ce: torch.Tensor
    kd: torch.Tensor
    num_tokens: torch.Tensor
    parts: dict | None = None  # method-specific extra parts (detached), e.g. DKD's tckd/nckd


def _valid_positions(labels: torch.Tensor) -> Any:
    mask = labels != IGNORE_INDEX
    return mask, mask.sum()


def _denominator(count: torch.Tensor, num_valid_tokens: Any) -> torch.Tensor:
    denom = count if num_valid_tokens is None else torch.as_tensor(num_valid_tokens, device=count.device)
    return denom.clamp(min=1).to(torch.float32)  # a fully masked batch gives 0, not NaN


def _kl_rows(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row from log-probabilities (0 * log 0 = 0)."""
    p = log_p.exp()
    return torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum(-1)


def _log_mixture(log_a: torch.Tensor, log_b: torch.Tensor, weight_a: float) -> torch.Tensor:
    """log(w * a + (1 - w) * b) computed stably with logsumexp (w in (0, 1))."""
    import math

    return torch.logsumexp(torch.stack([log_a + math.log(weight_a), log_b + math.log1p(-weight_a)]), dim=0)


def token_divergence(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    divergence: str = "forward_kl",
    temperature: float = 1.0,
    jsd_beta: float = 0.5,
    skew_alpha: float = 0.1,
) -> torch.Tensor:
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
    return divergence_from_logprobs(log_s, log_t, divergence, jsd_beta, skew_alpha)


def divergence_from_logprobs(
    log_s: torch.Tensor,
    log_t: torch.Tensor,
    divergence: str = "forward_kl",
    jsd_beta: float = 0.5,
    skew_alpha: float = 0.1,
) -> torch.Tensor:
    """:func:`token_divergence` on normalised log-probabilities (rows: any categories, e.g. top-k + tail)."""
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

    def kd_sum(s_valid: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return token_divergence(s_valid, teacher_logits[mask], divergence, temperature, jsd_beta, skew_alpha).sum()

    return _kd_plus_ce(student_logits, labels, alpha, temperature, num_valid_tokens, label_smoothing, kd_sum)


def _kd_plus_ce(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    temperature: float,
    num_valid_tokens: int | torch.Tensor | None,
    label_smoothing: float,
    kd_sum: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> DistillationLoss:
    """``alpha * T^2 * KD + (1 - alpha) * CE`` over the target tokens (``labels != -100``), both divided by the
    same token count; ``kd_sum(student_logits_valid, mask)`` is the KD term summed over those tokens (not called
    when alpha is 0). Shared by the full-vocabulary and the cached top-k losses."""
    mask, count = _valid_positions(labels)
    denom = _denominator(count, num_valid_tokens)
    s_valid = student_logits[mask]  # (N, V): select first, then softmax (memory)
    ce = F.cross_entropy(s_valid.float(), labels[mask], reduction="sum", label_smoothing=label_smoothing) / denom
    kd = kd_sum(s_valid, mask) / denom if alpha > 0 else torch.zeros((), device=ce.device)
    loss = alpha * temperature**2 * kd + (1.0 - alpha) * ce
    return DistillationLoss(loss=loss, ce=ce.detach(), kd=kd.detach(), num_tokens=count)


def topk_categories(
    student_logits_valid: torch.Tensor,
    teacher_topk_ids: torch.Tensor,
    teacher_topk_logprobs: torch.Tensor,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The (k+1)-way distributions of the cache: the teacher's k cached tokens plus one "tail" category holding
    the rest of its mass, and the student's distribution collapsed onto the same k tokens + tail. Rows: valid
    tokens; returns (student, teacher) log-probabilities of shape (N, k+1). With k = V the tail is empty and
    these are the full distributions."""
    log_s = F.log_softmax(student_logits_valid.float() / temperature, dim=-1)
    ids = teacher_topk_ids.long()
    s_top = log_s.gather(-1, ids)
    t_top = teacher_topk_logprobs.float()
    # the student's tail exactly, in log space: logsumexp over the tokens outside the teacher's top-k (no clamp:
    # an over-confident student keeps its true, tiny tail mass and its gradient)
    if ids.shape[-1] >= log_s.shape[-1]:  # k = V: the tail is empty for both (log-mass -1e30, a finite "log 0")
        empty = torch.full_like(s_top[:, 0], -1e30)
        return torch.cat([s_top, empty[:, None]], dim=-1), torch.cat([t_top, empty[:, None]], dim=-1)
    s_tail = torch.logsumexp(log_s.scatter(-1, ids, -1e30), dim=-1)
    # the teacher's tail from its cached top-k (float16 log-probs): log(1 - sum p_top) = log1mexp(logsumexp(top)),
    # floored at TEACHER_TAIL_FLOOR: a mass below the cache's resolution (or a rounded sum >= 1) stays finite
    t_tail = log1mexp(torch.logsumexp(t_top, dim=-1)).clamp(min=TEACHER_TAIL_FLOOR)
    return torch.cat([s_top, s_tail[:, None]], dim=-1), torch.cat([t_top, t_tail[:, None]], dim=-1)


TEACHER_TAIL_FLOOR = -30.0  # log of the smallest teacher tail mass the top-k cache stands for (9e-14)


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x <= 0, stably (Maechler 2012): log(-expm1(x)) near 0, log1p(-exp(x)) below -log 2."""
    x = x.clamp(max=0.0)
    return torch.where(x > -0.6931471805599453, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def topk_distillation_loss(
    student_logits: torch.Tensor,
    teacher_topk_ids: torch.Tensor,
    teacher_topk_logprobs: torch.Tensor,
    labels: torch.Tensor,
    alpha: float = 0.5,
    temperature: float = 1.0,
    num_valid_tokens: int | torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    divergence: str = "forward_kl",
    jsd_beta: float = 0.5,
    skew_alpha: float = 0.1,
) -> DistillationLoss:
    """KD from cached teacher top-k log-probabilities, with a tail bucket for the remaining mass.

    ``teacher_topk_ids``/``teacher_topk_logprobs`` are (B, L, k): the teacher's k most likely
    tokens and their log-probabilities at temperature ``temperature``. Both distributions are taken on the
    (k+1) categories of :func:`topk_categories` and ``divergence`` (any of :data:`DIVERGENCES`) is computed
    between them, as ``distillation_loss`` does on the full vocabulary. With k = V the two losses are equal.
    """

    def kd_sum(s_valid: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        ids, logprobs = teacher_topk_ids[mask], teacher_topk_logprobs[mask]
        s_all, t_all = topk_categories(s_valid.float(), ids, logprobs, temperature)
        return divergence_from_logprobs(s_all, t_all, divergence, jsd_beta, skew_alpha).sum()

    return _kd_plus_ce(student_logits, labels, alpha, temperature, num_valid_tokens, label_smoothing, kd_sum)


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
    return _dkd(ce, log_s, log_t, gold, temperature, dkd_alpha, dkd_beta, denom, count)


def _dkd(
    ce: Any, log_s: Any, log_t: Any, gold: Any, temperature: Any, dkd_alpha: Any, dkd_beta: Any, denom: Any, count: Any
) -> DistillationLoss:
    """DKD from log-probabilities at temperature T over any categories; ``gold``: each row's gold category.
    NCKD's distributions over the non-gold categories are the log-probs with the gold one pushed down by 1000,
    renormalised (the same as the reference's logits - 1000*gold, to float precision)."""
    gold_idx = gold[:, None]
    ls_g, lt_g = log_s.gather(-1, gold_idx).squeeze(-1), log_t.gather(-1, gold_idx).squeeze(-1)
    gold_mask = torch.zeros_like(log_s, dtype=torch.bool).scatter_(-1, gold_idx, True)
    # log(1 - p(g)) exactly, in log space: logsumexp of the other categories (no clamp at 1 - 1e-7, so a gold-logit
    # gap of 30 gives the true TCKD and a gradient on the gold logit)
    ls_rest = torch.logsumexp(log_s.masked_fill(gold_mask, float("-inf")), dim=-1)
    lt_rest = torch.logsumexp(log_t.masked_fill(gold_mask, float("-inf")), dim=-1)
    b_t, b_s = torch.stack([lt_g, lt_rest], -1), torch.stack([ls_g, ls_rest], -1)
    tckd = _kl_rows(b_t, b_s).sum() / denom
    log_s_ng = F.log_softmax(log_s - 1000.0 * gold_mask, dim=-1)
    log_t_ng = F.log_softmax(log_t - 1000.0 * gold_mask, dim=-1)
    nckd = _kl_rows(log_t_ng, log_s_ng).sum() / denom
    kd = dkd_alpha * tckd + dkd_beta * nckd
    loss = ce + temperature**2 * kd
    return DistillationLoss(
        loss=loss,
        ce=ce.detach(),
        kd=kd.detach(),
        num_tokens=count,
        parts={"tckd": tckd.detach(), "nckd": nckd.detach()},
    )


def topk_dkd_loss(
    student_logits: torch.Tensor,
    teacher_topk_ids: torch.Tensor,
    teacher_topk_logprobs: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 4.0,
    dkd_alpha: float = 1.0,
    dkd_beta: float = 8.0,
    num_valid_tokens: int | torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> DistillationLoss:
    """DKD from the teacher cache: on the (k+1)-way distributions of :func:`topk_categories`, the gold category
    being the gold token's position in the teacher's top-k, or the tail when the gold token is not among them.
    With k = V this equals :func:`dkd_loss` (the cache is written at the DKD temperature)."""
    mask, count = _valid_positions(labels)
    denom = _denominator(count, num_valid_tokens)
    s_valid, gold, ids = student_logits[mask].float(), labels[mask], teacher_topk_ids[mask].long()
    ce = F.cross_entropy(s_valid, gold, reduction="sum", label_smoothing=label_smoothing) / denom
    s_all, t_all = topk_categories(s_valid, ids, teacher_topk_logprobs[mask], temperature)
    hit = ids == gold[:, None]
    gold_category = torch.where(hit.any(-1), hit.float().argmax(-1), torch.full_like(gold, ids.shape[-1]))
    return _dkd(ce, s_all, t_all, gold_category, temperature, dkd_alpha, dkd_beta, denom, count)


def mutual_learning_loss(
    logits_a: torch.Tensor,
    logits_b: torch.Tensor,
    labels: torch.Tensor,
    alpha: float = 0.5,
    temperature: float = 1.0,
    num_valid_tokens: int | torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    teacher_logits: torch.Tensor | None = None,
    teacher_weight: float = 0.0,
) -> DistillationLoss:
    """Deep mutual learning (Zhang et al. 2018) of two students, summed (their parameters are disjoint)::

        L_x = (1 - alpha) * CE_x + alpha * T^2 * KL(p_peer || p_x) + teacher_weight * T^2 * KL(p_T || p_x)

    for x in (a, b), the peer's distribution detached (each student learns from the other, not through it).
    ``kd`` is the mean of the two peer terms; ``parts`` holds ``ce_a``, ``ce_b``, ``kl_peer_a``, ``kl_peer_b``
    (KL(p_b || p_a), KL(p_a || p_b)) and, with a teacher, ``kl_teacher_a``/``kl_teacher_b``.
    """
    if logits_a.shape != logits_b.shape:
        raise ValueError(
            f"the two students' logits differ in shape: {tuple(logits_a.shape)} vs {tuple(logits_b.shape)}"
        )
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    mask, count = _valid_positions(labels)
    denom = _denominator(count, num_valid_tokens)
    a, b, gold = logits_a[mask].float(), logits_b[mask].float(), labels[mask]
    ce_a = F.cross_entropy(a, gold, reduction="sum", label_smoothing=label_smoothing) / denom
    ce_b = F.cross_entropy(b, gold, reduction="sum", label_smoothing=label_smoothing) / denom
    kl_a = token_divergence(a, b, "forward_kl", temperature).sum() / denom  # KL(p_b || p_a), p_b detached
    kl_b = token_divergence(b, a, "forward_kl", temperature).sum() / denom  # KL(p_a || p_b), p_a detached
    loss = (1 - alpha) * (ce_a + ce_b) + alpha * temperature**2 * (kl_a + kl_b)
    parts = {"ce_a": ce_a.detach(), "ce_b": ce_b.detach(), "kl_peer_a": kl_a.detach(), "kl_peer_b": kl_b.detach()}
    if teacher_logits is not None and teacher_weight > 0:
        t = teacher_logits[mask]
        kt_a = token_divergence(a, t, "forward_kl", temperature).sum() / denom
        kt_b = token_divergence(b, t, "forward_kl", temperature).sum() / denom
        loss = loss + teacher_weight * temperature**2 * (kt_a + kt_b)
        parts.update(kl_teacher_a=kt_a.detach(), kl_teacher_b=kt_b.detach())
    return DistillationLoss(
        loss=loss, ce=((ce_a + ce_b) / 2).detach(), kd=((kl_a + kl_b) / 2).detach(), num_tokens=count, parts=parts
    )


def hidden_state_loss(
    student_states: list[torch.Tensor], teacher_states: list[torch.Tensor], masks: list[torch.Tensor]
) -> torch.Tensor:
    """Shrink-and-fine-tune's hidden-state term: the mean over copied layers of the mean squared error between a
    student block's output and the output of the teacher block it was copied from, over the valid positions of
    each (``masks[i]``: (batch, length), 1 = real token) and the hidden size. Teacher states are detached."""
    if not (len(student_states) == len(teacher_states) == len(masks)) or not student_states:
        raise ValueError("hidden_state_loss needs one student state, teacher state and mask per copied layer")
    terms = []
    for s, t, m in zip(student_states, teacher_states, masks):
        if s.shape != t.shape:
            raise ValueError(f"student and teacher hidden states differ in shape: {tuple(s.shape)} vs {tuple(t.shape)}")
        m = m.bool()
        diff = (s[m].float() - t[m].detach().float()) ** 2
        terms.append(diff.mean(-1).sum() / m.sum().clamp(min=1))
    return torch.stack(terms).mean()
