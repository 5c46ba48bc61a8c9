"""Structured pruning of T5/mT5: a smaller *dense* model (``d_ff``, ``num_heads``, ``num_layers``) that plain
transformers, CTranslate2 and every llmdiet engine load.

``width`` (Minitron's activation importance, Muralidharan et al. 2024), on the calibration rows, teacher-forced:

- a gated-FFN neuron's importance is the mean |activation| of its input to ``wo`` (``act(wi_0 x) * wi_1 x``) over
  the real tokens; each layer keeps its ``d_ff * (1 - ffn_sparsity)`` most important neurons (rows of
  ``wi_0``/``wi_1``, columns of ``wo``);
- a head's importance is the mean L2 norm of its attention output (the head's slice of the input to ``o``).
  Self-attention keeps one set of heads per stack (summed over its layers): T5's relative position bias is
  computed once, in block 0, and shared by every layer of the stack, so its head columns are sliced with that
  set. Cross-attention has no position bias: each layer keeps its own most important heads. ``num_heads`` is one
  number for every attention of the model, so every attention keeps the same count.

``depth``: each block's influence is ``1 - cos(input, output)`` per token, averaged over the real tokens (the
"block influence" of ShortGPT, Men et al. 2024); each stack drops its ``depth_sparsity`` share of blocks with the
lowest influence. Block 0 always stays (it holds the relative position bias).

0% pruning returns the same weights in the same order, so the same outputs (tested).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from llmdiet.prune.calibration import run_hooked, token_mask

STACKS = ("encoder", "decoder")


def _accumulate(store: dict, key, values: torch.Tensor) -> None:
    total, count = store.get(key, (0, 0))
    store[key] = (total + values.sum(0), count + values.shape[0])


def width_importance(model, batches: list[dict]) -> tuple[dict, dict]:
    """(neuron importance by FFN module name, head importance by attention module name): means over real tokens."""
    neurons: dict = {}
    heads: dict = {}
    current: dict = {}
    d_kv = model.config.d_kv

    def ffn_hook(name):
        def record(module, args):
            mask = token_mask(name, current["batch"])
            _accumulate(neurons, name, args[0].detach().float()[mask].abs())

        return record

    def head_hook(name):
        def record(module, args):
            x = args[0].detach().float()
            mask = token_mask(name, current["batch"])
            per_head = x[mask].reshape(-1, x.shape[-1] // d_kv, d_kv).norm(dim=-1)
            _accumulate(heads, name, per_head)

        return record

    handles = []
    for name, module in model.named_modules():
        if name.endswith(".DenseReluDense"):
            handles.append(module.wo.register_forward_pre_hook(ffn_hook(f"{name}.wo")))
        elif name.endswith((".SelfAttention", ".EncDecAttention")):
            handles.append(module.o.register_forward_pre_hook(head_hook(f"{name}.o")))
    run_hooked(model, batches, handles, current)
    mean = lambda store: {k.rsplit(".", 1)[0]: total / count for k, (total, count) in store.items()}  # noqa: E731
    return mean(neurons), mean(heads)


def _keep(scores: torch.Tensor, count: int) -> torch.Tensor:
    """The ``count`` highest-scoring indices, in their original order (all of them, in order, at 0%)."""
    return torch.topk(scores, count).indices.sort().values


def _head_rows(keep: torch.Tensor, d_kv: int) -> torch.Tensor:
    return (keep[:, None] * d_kv + torch.arange(d_kv)[None, :]).reshape(-1)


def _slice_attention(sd: dict, prefix: str, rows: torch.Tensor) -> None:
    for proj in ("q", "k", "v"):
        sd[f"{prefix}.{proj}.weight"] = sd[f"{prefix}.{proj}.weight"][rows]
    sd[f"{prefix}.o.weight"] = sd[f"{prefix}.o.weight"][:, rows]


def _slice_ffn(sd: dict, prefix: str, keep: torch.Tensor) -> None:
    for name in ("wi_0", "wi_1", "wi"):
        if f"{prefix}.{name}.weight" in sd:
            sd[f"{prefix}.{name}.weight"] = sd[f"{prefix}.{name}.weight"][keep]
    sd[f"{prefix}.wo.weight"] = sd[f"{prefix}.wo.weight"][:, keep]


def _rebuild(model, config, state_dict: dict):
    """A model of ``config`` holding ``state_dict`` exactly (T5's own lm_head kept untied, as in the input)."""
    from transformers import AutoModelForSeq2SeqLM

    from llmdiet.compat import t5_as_in_4x

    smaller = t5_as_in_4x(AutoModelForSeq2SeqLM.from_config(config))
    missing, unexpected = smaller.load_state_dict(state_dict, strict=False)
    tied = {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"}
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"pruned state dict does not fit the smaller config: {missing[:3]} {unexpected[:3]}")
    smaller.set_input_embeddings(smaller.get_input_embeddings())  # encoder and decoder share the one embedding
    return smaller.to(dtype=next(model.parameters()).dtype).eval()


def _self_attention_heads(heads: dict, stack: str, count: int) -> torch.Tensor:
    total = sum(v for k, v in heads.items() if k.startswith(f"{stack}.") and k.endswith("SelfAttention"))
    return _keep(total, count)


def prune_width(model, tokenizer, settings, calibration):
    config = model.config
    neurons, heads = width_importance(model, calibration.batches(tokenizer, model, "width"))
    d_ff = config.d_ff - int(round(settings.ffn_sparsity * config.d_ff))
    n_heads = max(1, config.num_heads - int(round(settings.head_sparsity * config.num_heads)))
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    for name, scores in neurons.items():
        _slice_ffn(sd, name, _keep(scores, d_ff))
    for stack in STACKS:
        kept = _self_attention_heads(heads, stack, n_heads)
        rows = _head_rows(kept, config.d_kv)
        for name in [k for k in heads if k.startswith(f"{stack}.") and k.endswith("SelfAttention")]:
            _slice_attention(sd, name, rows)
        bias = f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
        sd[bias] = sd[bias][:, kept]
    for name in [k for k in heads if k.endswith("EncDecAttention")]:
        _slice_attention(sd, name, _head_rows(_keep(heads[name], n_heads), config.d_kv))
    smaller_config = copy.deepcopy(config)
    smaller_config.d_ff, smaller_config.num_heads = d_ff, n_heads
    report = {
        "ffn_sparsity": settings.ffn_sparsity,
        "head_sparsity": settings.head_sparsity,
        "d_ff": [config.d_ff, d_ff],
        "num_heads": [config.num_heads, n_heads],
        "importance": "mean |activation| of each FFN neuron; mean L2 norm of each head's attention output",
        "calibration": calibration.describe(),
    }
    return _rebuild(model, smaller_config, sd), tokenizer, report


def block_influence(model, batches: list[dict]) -> dict[str, list[float]]:
    """Stack -> 1 - cos(block input, block output) of each block, averaged over the real tokens."""
    scores: dict = {}
    current: dict = {}

    def hook(stack, index):
        def record(module, args, kwargs, output):
            x = (args[0] if args else kwargs["hidden_states"]).detach().float()
            y = (output[0] if isinstance(output, tuple) else output).detach().float()
            mask = token_mask(f"{stack}.block", current["batch"])
            _accumulate(scores, (stack, index), 1 - nn.functional.cosine_similarity(x[mask], y[mask], dim=-1)[:, None])

        return record

    handles = [
        block.register_forward_hook(hook(stack, i), with_kwargs=True)
        for stack in STACKS
        for i, block in enumerate(getattr(model, stack).block)
    ]
    run_hooked(model, batches, handles, current)
    out: dict[str, list[float]] = {stack: [] for stack in STACKS}
    for (stack, _), (total, count) in sorted(scores.items()):
        out[stack].append(float(total[0] / count))
    return out


def prune_depth(model, tokenizer, settings, calibration):
    config = model.config
    influence = block_influence(model, calibration.batches(tokenizer, model, "depth"))
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    kept: dict[str, list[int]] = {}
    for stack in STACKS:
        n = len(influence[stack])
        drop = min(n - 1, int(round(settings.depth_sparsity * n)))
        order = sorted(range(1, n), key=lambda i: influence[stack][i])  # block 0 stays
        kept[stack] = sorted({0, *range(n)} - set(order[:drop]))
        renamed = {}
        for key in [k for k in sd if k.startswith(f"{stack}.block.")]:
            index = int(key.split(".")[2])
            value = sd.pop(key)
            if index in kept[stack]:
                renamed[f"{stack}.block.{kept[stack].index(index)}." + key.split(".", 3)[3]] = value
        sd.update(renamed)
    smaller_config = copy.deepcopy(config)
    smaller_config.num_layers = len(kept["encoder"])
    smaller_config.num_decoder_layers = len(kept["decoder"])
    report = {
        "depth_sparsity": settings.depth_sparsity,
        "block_influence": influence,
        "kept_blocks": kept,
        "importance": "1 - cos(block input, block output), mean over real tokens; block 0 always kept",
        "calibration": calibration.describe(),
    }
    return _rebuild(model, smaller_config, sd), tokenizer, report
