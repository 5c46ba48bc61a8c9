"""Unstructured and N:M pruning: a share of each weight matrix set to zero; the model keeps its shape.

The prunable weights are the ``nn.Linear`` layers inside the encoder and decoder stacks (attention projections
and feed-forward matrices); the embeddings and ``lm_head`` stay dense (they are the vocabulary, shared with the
tokenizer). Zeros are real (``torch.nn.utils.prune`` masks are made permanent with ``prune.remove``); the
sparsity of every matrix is measured afterwards and recorded.

- ``magnitude``: ``prune.l1_unstructured`` on each matrix (its ``--sparsity`` smallest |w| set to zero).
- ``wanda`` (Sun et al. 2023): score ``|w_ij| * ||x_j||_2`` with ``x_j`` the j-th input feature over the
  calibration tokens; in each output row the lowest-scoring ``--sparsity`` share is set to zero. No weight update.
- ``2:4`` / ``4:8``: in every group of 4 (8) consecutive input weights of a row, the 2 (4) lowest-scoring ones are
  zero (``--importance magnitude``: |w|; ``wanda``: the Wanda score). 50% sparsity by construction.
"""

from __future__ import annotations

import torch
from torch import nn

from llmdiet.prune.calibration import run_hooked, token_mask


def prunable_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """Name -> Linear of every weight matrix inside the encoder and decoder stacks (not embeddings, not lm_head)."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and ("encoder" in name or "decoder" in name) and "lm_head" not in name
    }


def measured_sparsity(model: nn.Module) -> dict:
    """Zeros of every prunable matrix, and over all of them (what the report and the tests read)."""
    layers = {name: float((m.weight == 0).float().mean()) for name, m in prunable_linears(model).items()}
    total = sum(m.weight.numel() for m in prunable_linears(model).values())
    zeros = sum(int((m.weight == 0).sum()) for m in prunable_linears(model).values())
    return {"overall": zeros / total if total else 0.0, "weights": total, "zeros": zeros, "per_layer": layers}


def input_norms(model: nn.Module, batches: list[dict]) -> dict[str, torch.Tensor]:
    """||x_j||_2 of every input feature of every prunable Linear over the calibration tokens (padding excluded)."""
    sums: dict[str, torch.Tensor] = {}
    current: dict = {}

    def hook(name):
        def record(module, args):
            x = args[0].detach().float()
            mask = token_mask(name, current["batch"])
            rows = x[mask] if mask.shape == x.shape[:2] else x.reshape(-1, x.shape[-1])
            sums[name] = sums.get(name, 0) + (rows**2).sum(0)

        return record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in prunable_linears(model).items()]
    run_hooked(model, batches, handles, current)
    return {name: total.sqrt() for name, total in sums.items()}


def _zero_lowest_per_row(weight: torch.Tensor, score: torch.Tensor, sparsity: float) -> None:
    count = int(round(sparsity * weight.shape[1]))
    if count:
        lowest = torch.topk(score, count, dim=1, largest=False).indices
        weight.scatter_(1, lowest, 0.0)


def _zero_n_of_m(weight: torch.Tensor, score: torch.Tensor, keep: int, group: int) -> None:
    rows, cols = weight.shape
    if cols % group:
        raise ValueError(f"a {rows}x{cols} matrix has {cols} inputs, not a multiple of {group}: no {keep}:{group}")
    grouped = score.reshape(rows, cols // group, group)
    lowest = torch.topk(grouped, group - keep, dim=2, largest=False).indices
    mask = torch.ones_like(grouped, dtype=torch.bool).scatter_(2, lowest, False)
    weight.mul_(mask.reshape(rows, cols))


def prune_magnitude(model, tokenizer, settings, calibration):
    from torch.nn.utils import prune

    for module in prunable_linears(model).values():
        prune.l1_unstructured(module, "weight", amount=settings.sparsity)
        prune.remove(module, "weight")
    return model, tokenizer, {"sparsity_target": settings.sparsity, "score": "|w| per matrix (l1_unstructured)"}


def prune_wanda(model, tokenizer, settings, calibration):
    norms = input_norms(model, calibration.batches(tokenizer, model, "wanda"))
    with torch.no_grad():
        for name, module in prunable_linears(model).items():
            score = module.weight.abs().float() * norms[name][None, :]
            _zero_lowest_per_row(module.weight, score, settings.sparsity)
    score = "|w_ij| * ||x_j||_2 per output row (Wanda)"
    return (
        model,
        tokenizer,
        {"sparsity_target": settings.sparsity, "score": score, "calibration": calibration.describe()},
    )


def _prune_n_m(model, tokenizer, settings, calibration, keep: int, group: int):
    norms = None
    if settings.importance == "wanda":
        norms = input_norms(model, calibration.batches(tokenizer, model, f"{keep}:{group} --importance wanda"))
    with torch.no_grad():
        for name, module in prunable_linears(model).items():
            score = module.weight.abs().float()
            if norms is not None:
                score = score * norms[name][None, :]
            _zero_n_of_m(module.weight, score, keep, group)
    report = {"sparsity_target": 1 - keep / group, "pattern": f"{keep}:{group}", "score": settings.importance}
    if norms is not None:
        report["calibration"] = calibration.describe()
    return model, tokenizer, report


def prune_2_4(model, tokenizer, settings, calibration):
    return _prune_n_m(model, tokenizer, settings, calibration, 2, 4)


def prune_4_8(model, tokenizer, settings, calibration):
    return _prune_n_m(model, tokenizer, settings, calibration, 4, 8)
