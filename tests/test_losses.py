"""The distillation loss against an independent reference computed by hand (plain loops, math)."""

import math

import pytest
import torch

from llmdiet.distill.losses import distillation_loss, topk_distillation_loss


def reference_loss(student, teacher, labels, alpha, T):
    """Token-by-token loops with Python floats: no shared code with llmdiet.distill.losses."""
    ce_sum = kd_sum = 0.0
    n = 0
    B, L, V = student.shape
    for b in range(B):
        for t in range(L):
            y = int(labels[b, t])
            if y == -100:
                continue
            n += 1
            s = [float(x) for x in student[b, t]]
            q = [float(x) for x in teacher[b, t]]
            log_z = math.log(sum(math.exp(x) for x in s))
            ce_sum += log_z - s[y]
            zs = math.log(sum(math.exp(x / T) for x in s))
            zt = math.log(sum(math.exp(x / T) for x in q))
            for v in range(V):
                log_pt, log_ps = q[v] / T - zt, s[v] / T - zs
                kd_sum += math.exp(log_pt) * (log_pt - log_ps)
    n = max(n, 1)
    ce, kd = ce_sum / n, kd_sum / n
    return alpha * T * T * kd + (1 - alpha) * ce, ce, kd


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(1)
    student = torch.randn(2, 5, 11, generator=g, dtype=torch.float64) * 2
    teacher = torch.randn(2, 5, 11, generator=g, dtype=torch.float64) * 2
    labels = torch.randint(0, 11, (2, 5), generator=g)
    labels[0, 3:] = -100  # padding at the end of the first target
    labels[1, 0] = -100  # and a masked position in the middle of nowhere
    return student, teacher, labels


@pytest.mark.parametrize("alpha,T", [(0.5, 1.0), (0.5, 2.0), (0.25, 4.0), (0.0, 2.0), (1.0, 3.0)])
def test_matches_hand_computed_reference(logits, alpha, T):
    student, teacher, labels = logits
    out = distillation_loss(student, teacher, labels, alpha=alpha, temperature=T)
    ref_total, ref_ce, ref_kd = reference_loss(student, teacher, labels, alpha, T)
    assert out.ce.item() == pytest.approx(ref_ce, rel=1e-5)
    if alpha > 0:
        assert out.kd.item() == pytest.approx(ref_kd, rel=1e-5)
    assert out.loss.item() == pytest.approx(ref_total, rel=1e-5)
    assert out.num_tokens.item() == 7


def test_temperature_squared_scaling(logits):
    student, teacher, labels = logits
    T = 3.0
    full = distillation_loss(student, teacher, labels, alpha=1.0, temperature=T)
    assert full.loss.item() == pytest.approx(T * T * full.kd.item(), rel=1e-6)


def test_alpha_zero_is_cross_entropy(logits):
    student, teacher, labels = logits
    out = distillation_loss(student, teacher, labels, alpha=0.0, temperature=2.0)
    expected = torch.nn.functional.cross_entropy(student.reshape(-1, 11).float(), labels.reshape(-1), ignore_index=-100)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_masked_positions_are_ignored(logits):
    student, teacher, labels = logits
    before = distillation_loss(student, teacher, labels, alpha=0.5, temperature=2.0).loss
    student2, teacher2 = student.clone(), teacher.clone()
    student2[labels == -100] = 1e3 * torch.randn_like(student2[labels == -100])
    teacher2[labels == -100] = -1e3
    after = distillation_loss(student2, teacher2, labels, alpha=0.5, temperature=2.0).loss
    assert after.item() == pytest.approx(before.item(), rel=1e-9)


def test_identical_logits_give_zero_kd(logits):
    student, _, labels = logits
    out = distillation_loss(student, student.clone(), labels, alpha=1.0, temperature=2.0)
    assert abs(out.kd.item()) < 1e-9


def test_fully_masked_batch_gives_zero_not_nan(logits):
    student, teacher, labels = logits
    labels = torch.full_like(labels, -100)
    student = student.clone().requires_grad_(True)
    out = distillation_loss(student, teacher, labels, alpha=0.5, temperature=2.0)
    assert out.loss.item() == 0.0 and not torch.isnan(out.loss)
    out.loss.backward()
    assert torch.all(student.grad == 0)


def test_gradient_accumulation_normalisation_matches_full_batch(logits):
    """Two half-batches normalised by the global token count sum to the full-batch loss."""
    student, teacher, labels = logits
    full = distillation_loss(student, teacher, labels, alpha=0.5, temperature=2.0).loss
    total = int((labels != -100).sum())
    halves = sum(
        distillation_loss(
            student[i : i + 1], teacher[i : i + 1], labels[i : i + 1], 0.5, 2.0, num_valid_tokens=total
        ).loss
        for i in range(2)
    )
    assert halves.item() == pytest.approx(full.item(), rel=1e-6)  # float32 sums in another order (CPU-dependent)


def test_bf16_inputs_are_computed_in_float32(logits):
    student, teacher, labels = logits
    out = distillation_loss(student.bfloat16(), teacher.bfloat16(), labels, 0.5, 2.0)
    assert out.loss.dtype == torch.float32
    ref = distillation_loss(student.bfloat16().double(), teacher.bfloat16().double(), labels, 0.5, 2.0)
    assert out.loss.item() == pytest.approx(ref.loss.item(), rel=1e-5)


def test_rejects_mismatched_vocab_and_bad_alpha(logits):
    student, teacher, labels = logits
    with pytest.raises(ValueError, match="share the vocabulary"):
        distillation_loss(student, teacher[..., :10], labels)
    with pytest.raises(ValueError, match="alpha"):
        distillation_loss(student, teacher, labels, alpha=1.5)


def test_topk_with_full_support_equals_full_kl(logits):
    student, teacher, labels = logits
    T = 2.0
    logp = torch.log_softmax(teacher / T, dim=-1)
    values, ids = logp.topk(11, dim=-1)
    cached = topk_distillation_loss(student, ids, values, labels, alpha=0.5, temperature=T)
    full = distillation_loss(student, teacher, labels, alpha=0.5, temperature=T)
    assert cached.kd.item() == pytest.approx(full.kd.item(), rel=1e-4, abs=1e-6)


def test_topk_truncated_support_is_a_lower_bound_and_close(logits):
    student, teacher, labels = logits
    T = 1.0
    sharp_teacher = teacher * 4  # peaked teacher: top-4 hold most of the mass
    logp = torch.log_softmax(sharp_teacher / T, dim=-1)
    values, ids = logp.topk(4, dim=-1)
    cached = topk_distillation_loss(student, ids, values, labels, alpha=1.0, temperature=T)
    full = distillation_loss(student, sharp_teacher, labels, alpha=1.0, temperature=T)
    # Collapsing both distributions onto a coarser partition can only lower the KL (data processing).
    assert cached.kd.item() <= full.kd.item() + 1e-9
    assert cached.kd.item() > 0.5 * full.kd.item()
