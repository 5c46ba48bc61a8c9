"""The divergence family and DKD against independent float64 references, their properties, and training with them."""

from __future__ import annotations

import math

import pytest
import torch

from llmdiet.distill.losses import DIVERGENCES, distillation_loss, dkd_loss, token_divergence


def _softmax64(logits, t):
    z = logits.double() / t
    z = z - z.max(-1, keepdim=True).values
    e = z.exp()
    return e / e.sum(-1, keepdim=True)


def _kl64(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


def reference_divergence(s_row, t_row, name, temperature, beta=0.5, a=0.1) -> float:
    """Written from the definitions (GUIDE §7), plain Python over float64 probabilities."""
    return reference_on(_softmax64(s_row, temperature).tolist(), _softmax64(t_row, temperature).tolist(), name, beta, a)


def reference_on(p_s, p_t, name, beta=0.5, a=0.1) -> float:
    """The divergences on two probability lists (any categories: a vocabulary, or top-k + tail)."""
    if name == "forward_kl":
        return _kl64(p_t, p_s)
    if name == "reverse_kl":
        return _kl64(p_s, p_t)
    if name == "jsd":
        m = [beta * x + (1 - beta) * y for x, y in zip(p_t, p_s)]
        return beta * _kl64(p_t, m) + (1 - beta) * _kl64(p_s, m)
    if name == "skew_kl":
        return _kl64(p_t, [a * x + (1 - a) * y for x, y in zip(p_t, p_s)])
    if name == "skew_reverse_kl":
        return _kl64(p_s, [a * y + (1 - a) * x for x, y in zip(p_t, p_s)])
    raise ValueError(name)


@pytest.fixture
def batch():
    torch.manual_seed(0)
    student, teacher = torch.randn(3, 6, 17) * 2, torch.randn(3, 6, 17) * 2
    labels = torch.randint(0, 17, (3, 6))
    labels[0, 4:] = -100
    labels[2, 1:] = -100
    return student, teacher, labels


@pytest.mark.parametrize("name", DIVERGENCES)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_each_divergence_equals_the_float64_reference_with_masking_and_t2(batch, name, temperature):
    student, teacher, labels = batch
    mask = labels != -100
    expected = (
        sum(reference_divergence(s, t, name, temperature, 0.3, 0.2) for s, t in zip(student[mask], teacher[mask]))
        / mask.sum().item()
    )
    got = distillation_loss(
        student, teacher, labels, alpha=1.0, temperature=temperature, divergence=name, jsd_beta=0.3, skew_alpha=0.2
    )
    assert got.kd.item() == pytest.approx(expected, rel=1e-5)
    assert got.loss.item() == pytest.approx(temperature**2 * expected, rel=1e-5)  # alpha = 1: T^2 * divergence


@pytest.mark.parametrize("name", DIVERGENCES)
def test_divergences_are_zero_for_identical_inputs_and_nonnegative(batch, name):
    student, teacher, _ = batch
    rows_s, rows_t = student.reshape(-1, 17), teacher.reshape(-1, 17)
    assert token_divergence(rows_s, rows_s, name, 2.0, 0.4, 0.3).abs().max().item() < 1e-6
    assert token_divergence(rows_s, rows_t, name, 2.0, 0.4, 0.3).min().item() >= -1e-6


def test_jsd_ends_and_skew_zero(batch):
    student, teacher, _ = batch
    s, t = student.reshape(-1, 17), teacher.reshape(-1, 17)
    torch.testing.assert_close(token_divergence(s, t, "jsd", 1.0, jsd_beta=0.0), token_divergence(s, t, "forward_kl"))
    torch.testing.assert_close(token_divergence(s, t, "jsd", 1.0, jsd_beta=1.0), token_divergence(s, t, "reverse_kl"))
    torch.testing.assert_close(
        token_divergence(s, t, "skew_kl", 1.0, skew_alpha=0.0), token_divergence(s, t, "forward_kl")
    )
    torch.testing.assert_close(
        token_divergence(s, t, "skew_reverse_kl", 1.0, skew_alpha=0.0), token_divergence(s, t, "reverse_kl")
    )
    # strictly inside, JSD is bounded by log 2 (the GKD paper's property) and far from either KL
    inner = token_divergence(s, t, "jsd", 1.0, jsd_beta=0.5)
    assert inner.max().item() <= math.log(2) + 1e-6


def test_gradients_reach_only_the_student(batch):
    student, teacher, labels = batch
    for name in DIVERGENCES:
        s, t = student.clone().requires_grad_(True), teacher.clone().requires_grad_(True)
        distillation_loss(s, t, labels, 0.5, 2.0, divergence=name).loss.backward()
        assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None
        assert s.grad[labels == -100].abs().sum() == 0  # masked positions carry no gradient
    s, t = student.clone().requires_grad_(True), teacher.clone().requires_grad_(True)
    dkd_loss(s, t, labels).loss.backward()
    assert s.grad.abs().sum() > 0 and t.grad is None


def test_dkd_parts_equal_the_float64_reference(batch):
    student, teacher, labels = batch
    mask = labels != -100
    temperature, a, b = 4.0, 1.0, 8.0
    tckd = nckd = ce = 0.0
    for s_row, t_row, g in zip(student[mask], teacher[mask], labels[mask].tolist()):
        p_s, p_t = _softmax64(s_row, temperature).tolist(), _softmax64(t_row, temperature).tolist()
        tckd += _kl64([p_t[g], 1 - p_t[g]], [p_s[g], 1 - p_s[g]])
        # non-gold distributions: renormalised probabilities of the other tokens (= softmax with the gold masked)
        q_s = [x / (1 - p_s[g]) for i, x in enumerate(p_s) if i != g]
        q_t = [x / (1 - p_t[g]) for i, x in enumerate(p_t) if i != g]
        nckd += _kl64(q_t, q_s)
        ce -= math.log(_softmax64(s_row, 1.0)[g].item())
    n = mask.sum().item()
    got = dkd_loss(student, teacher, labels, temperature, a, b)
    assert got.parts["tckd"].item() == pytest.approx(tckd / n, rel=1e-4)
    assert got.parts["nckd"].item() == pytest.approx(nckd / n, rel=1e-4)
    assert got.kd.item() == pytest.approx(a * tckd / n + b * nckd / n, rel=1e-4)
    assert got.loss.item() == pytest.approx(ce / n + temperature**2 * (a * tckd / n + b * nckd / n), rel=1e-4)


@pytest.mark.parametrize(
    "extra",
    [
        ["--divergence", "reverse_kl"],
        ["--divergence", "jsd", "--jsd_beta", "0.5"],
        ["--divergence", "skew_kl"],
        ["--method", "dkd", "--temperature", "4"],
    ],
    ids=["reverse_kl", "jsd", "skew_kl", "dkd"],
)
def test_each_method_trains_the_demo_student_and_lowers_its_loss(demo_assets, tmp_path, extra):
    from test_distill import parse, small_run_argv

    from llmdiet.distill.job import run

    summary = run(*parse(small_run_argv(demo_assets, tmp_path / "run", "--max_steps", "12", *extra)))
    losses = [e["loss"] for e in summary["log_history"] if "loss" in e]
    kd = [e["kd"] for e in summary["log_history"] if "kd" in e]
    assert losses[-1] < 0.9 * losses[0] and kd[-1] < kd[0], (losses, kd)  # measured 0.74-0.83 after 12 steps
    if "dkd" in extra:
        assert all("tckd" in e and "nckd" in e for e in summary["log_history"] if "loss" in e)
    assert summary["distillation"]["divergence"] == (extra[1] if extra[0] == "--divergence" else "forward_kl")


# ----------------------------------------------------------------------------- the top-k teacher cache


def _topk(teacher, temperature, k):
    top = torch.log_softmax(teacher / temperature, dim=-1).topk(k, dim=-1)
    return top.indices, top.values


def reference_categories(s_row, t_row, ids, temperature):
    """(k+1)-way float64 distributions: the teacher's k cached tokens + one tail holding the rest (both models)."""
    p_s, p_t = _softmax64(s_row, temperature).tolist(), _softmax64(t_row, temperature).tolist()
    q_s, q_t = [p_s[i] for i in ids], [p_t[i] for i in ids]
    return q_s + [max(1 - sum(q_s), 0.0)], q_t + [max(1 - sum(q_t), 0.0)]


@pytest.mark.parametrize("name", DIVERGENCES)
def test_cached_topk_loss_equals_the_float64_reference_and_the_full_loss_at_k_v(batch, name):
    from llmdiet.distill.losses import topk_distillation_loss

    student, teacher, labels = batch
    mask, temperature = labels != -100, 2.0
    ids, logprobs = _topk(teacher, temperature, 5)
    expected = (
        sum(
            reference_on(*reference_categories(s, t, i.tolist(), temperature), name, 0.3, 0.2)
            for s, t, i in zip(student[mask], teacher[mask], ids[mask])
        )
        / mask.sum().item()
    )
    got = topk_distillation_loss(
        student, ids, logprobs, labels, 1.0, temperature, divergence=name, jsd_beta=0.3, skew_alpha=0.2
    )
    assert got.kd.item() == pytest.approx(expected, rel=1e-4)
    full_ids, full_logprobs = _topk(teacher, temperature, 17)  # k = V: the tail is empty
    full = topk_distillation_loss(
        student, full_ids, full_logprobs, labels, 0.5, temperature, divergence=name, jsd_beta=0.3, skew_alpha=0.2
    )
    exact = distillation_loss(student, teacher, labels, 0.5, temperature, divergence=name, jsd_beta=0.3, skew_alpha=0.2)
    assert full.loss.item() == pytest.approx(exact.loss.item(), rel=1e-4, abs=1e-6)


def test_cached_topk_dkd_equals_the_float64_reference_and_dkd_at_k_v(batch):
    from llmdiet.distill.losses import topk_dkd_loss

    student, teacher, labels = batch
    mask, temperature, k = labels != -100, 4.0, 4
    ids, logprobs = _topk(teacher, temperature, k)
    tckd = nckd = 0.0
    in_tail = 0
    for s_row, t_row, i, g in zip(student[mask], teacher[mask], ids[mask].tolist(), labels[mask].tolist()):
        p_s, p_t = reference_categories(s_row, t_row, i, temperature)
        c = i.index(g) if g in i else k  # the gold token's category: its top-k slot, or the tail
        in_tail += c == k
        tckd += _kl64([p_t[c], 1 - p_t[c]], [p_s[c], 1 - p_s[c]])
        nckd += _kl64(
            [x / (1 - p_t[c]) for j, x in enumerate(p_t) if j != c],
            [x / (1 - p_s[c]) for j, x in enumerate(p_s) if j != c],
        )
    assert 0 < in_tail < mask.sum().item()  # both cases are exercised
    n = mask.sum().item()
    got = topk_dkd_loss(student, ids, logprobs, labels, temperature, 1.0, 8.0)
    assert got.parts["tckd"].item() == pytest.approx(tckd / n, rel=1e-4)
    assert got.parts["nckd"].item() == pytest.approx(nckd / n, rel=1e-4)
    full_ids, full_logprobs = _topk(teacher, temperature, 17)
    full = topk_dkd_loss(student, full_ids, full_logprobs, labels, temperature, 1.0, 8.0)
    assert full.loss.item() == pytest.approx(
        dkd_loss(student, teacher, labels, temperature, 1.0, 8.0).loss.item(), rel=1e-4
    )


@pytest.mark.parametrize(
    "extra", [["--divergence", "jsd"], ["--method", "dkd", "--temperature", "4"]], ids=["jsd", "dkd"]
)
def test_the_teacher_cache_trains_every_fixed_target_method(demo_assets, tmp_path, extra):
    from test_distill import parse, small_run_argv

    from llmdiet.distill.job import run

    argv = small_run_argv(
        demo_assets,
        tmp_path / "run",
        "--max_steps",
        "12",
        "--teacher_cache",
        str(tmp_path / "cache"),
        "--teacher_cache_topk",
        "8",
        *extra,
    )
    summary = run(*parse(argv))
    kd = [e["kd"] for e in summary["log_history"] if "kd" in e]
    assert (tmp_path / "cache" / "meta.json").exists() and kd[-1] < kd[0], kd


@pytest.mark.parametrize("gap", [30.0, 45.0])
def test_dkd_tckd_is_exact_for_an_over_confident_student(gap):
    """Gold logit `gap` above the rest: TCKD equals the float64 value (the 1 - 1e-7 clamp gave 7.06 for 12.46) and
    the gold logit still gets a gradient; the top-k tail bucket keeps the student's true tail mass."""
    import math

    from llmdiet.distill.losses import dkd_loss, topk_categories

    vocab, gold = 12, 3
    student = torch.zeros(1, 1, vocab)
    student[0, 0, gold] = gap
    student.requires_grad_(True)
    teacher = torch.zeros(1, 1, vocab)
    teacher[0, 0, gold] = 2.0
    labels = torch.tensor([[gold]])
    out = dkd_loss(student, teacher, labels, temperature=1.0, dkd_alpha=1.0, dkd_beta=0.0)
    # float64 reference: binary [p(g), 1 - p(g)] with 1 - p(g) = (V-1) e^0 / (e^gap + V-1), computed in log space
    log_rest_s = math.log(vocab - 1) - math.log(math.exp(gap) + vocab - 1)
    log_g_s = gap - math.log(math.exp(gap) + vocab - 1)
    p_t = math.exp(2.0) / (math.exp(2.0) + vocab - 1)
    expected = p_t * (math.log(p_t) - log_g_s) + (1 - p_t) * (math.log(1 - p_t) - log_rest_s)
    assert out.parts["tckd"].item() == pytest.approx(expected, rel=1e-5)
    out.loss.backward()
    assert student.grad[0, 0, gold].item() > 0  # pushed down towards the teacher's p(g)
    s_all, _ = topk_categories(student[0].detach(), torch.tensor([[gold]]), torch.log(torch.tensor([[p_t]])), 1.0)
    assert s_all[0, 1].item() == pytest.approx(log_rest_s, rel=1e-5)  # the tail: true log-mass, not log(1e-6)
