"""Static-cache decoding vs transformers' ``generate``, and what ``torch.compile`` of the decoding step adds.

    python bench/static_decoding.py --shape flan-t5-small --batches 1 16 --kinds fp32 int8 \
        --out bench/results/static-decoding-flan-t5-small.json

For one random-init flan-T5 shape (``llmdiet.shapes``), fp32 and/or torch.ao dynamic int8, and each batch size,
times three ways of greedy decoding exactly 40 tokens from 40-token sources, in one process, alternating
(``--rounds`` rounds after one warm-up each, medians):

* ``generate``: ``model.generate`` (transformers' dynamic KV cache);
* ``static``: :class:`llmdiet.engines.t5_static_decoding.StaticCacheT5Decoder`, what the torch backends use;
* ``compiled``: the same decoder step written with fixed shapes (keys/values buffers of the full length, future
  positions masked with -inf) and wrapped in ``torch.compile(dynamic=False)``; its one-off compile time (first
  call, outside the timed rounds) is recorded as ``compile_s``.

Output ids of ``static`` are compared with ``generate`` (must be equal) and ``compiled`` with ``static`` (share of
equal ids; the masked full-length attention sums in another order, so int8 activations can round differently).
This is the measurement behind the choice to ship the static decoder and not the compiled step (see BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

NEW_TOKENS = 40


def compiled_decoder(model, length: int):
    """A greedy decoder whose per-token step has fixed shapes, compiled once by ``torch.compile``."""
    import torch

    decoder, heads, d_kv = model.decoder, model.config.num_heads, model.config.d_kv
    tied_scale = model.config.d_model**-0.5 if model.config.tie_word_embeddings else None

    def step(tokens, position, keys, values, cross_keys, cross_values, cross_bias, self_bias):
        batch = tokens.shape[0]
        hidden = decoder.embed_tokens(tokens[:, None])
        for i, block in enumerate(decoder.block):
            layer_sa, layer_ca, layer_ff = block.layer
            attention = layer_sa.SelfAttention
            normed = layer_sa.layer_norm(hidden)
            q = attention.q(normed).view(batch, -1, heads, d_kv).transpose(1, 2)
            keys[i].index_copy_(2, position, attention.k(normed).view(batch, -1, heads, d_kv).transpose(1, 2))
            values[i].index_copy_(2, position, attention.v(normed).view(batch, -1, heads, d_kv).transpose(1, 2))
            scores = torch.matmul(q, keys[i].transpose(3, 2)) + self_bias
            weights = torch.softmax(scores.float(), -1).type_as(scores)
            context = torch.matmul(weights, values[i]).transpose(1, 2).reshape(batch, -1, heads * d_kv)
            hidden = hidden + attention.o(context)
            attention = layer_ca.EncDecAttention
            q = attention.q(layer_ca.layer_norm(hidden)).view(batch, -1, heads, d_kv).transpose(1, 2)
            scores = torch.matmul(q, cross_keys[i].transpose(3, 2)) + cross_bias
            weights = torch.softmax(scores.float(), -1).type_as(scores)
            context = torch.matmul(weights, cross_values[i]).transpose(1, 2).reshape(batch, -1, heads * d_kv)
            hidden = layer_ff(hidden + attention.o(context))
        hidden = decoder.final_layer_norm(hidden)
        if tied_scale is not None:
            hidden = hidden * tied_scale
        return torch.argmax(model.lm_head(hidden)[:, -1].float(), -1)

    compiled = torch.compile(step, dynamic=False)

    @torch.inference_mode()
    def generate(ids, mask):
        batch = ids.shape[0]
        encoded = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        cross_keys = [
            b.layer[1].EncDecAttention.k(encoded).view(batch, -1, heads, d_kv).transpose(1, 2).contiguous()
            for b in decoder.block
        ]
        cross_values = [
            b.layer[1].EncDecAttention.v(encoded).view(batch, -1, heads, d_kv).transpose(1, 2).contiguous()
            for b in decoder.block
        ]
        dtype = encoded.dtype
        cross_bias = torch.zeros(1, heads, 1, encoded.shape[1], dtype=dtype) + model.invert_attention_mask(mask).to(
            dtype
        )
        keys = [torch.zeros(batch, heads, length, d_kv, dtype=dtype) for _ in decoder.block]
        values = [torch.zeros(batch, heads, length, d_kv, dtype=dtype) for _ in decoder.block]
        bias = decoder.block[0].layer[0].SelfAttention.compute_bias(length, length).to(dtype)
        bias = bias + torch.full((length, length), float("-inf"), dtype=dtype).triu(1)
        tokens = torch.full((batch,), model.config.decoder_start_token_id, dtype=torch.long)
        out = [tokens]
        for t in range(length):
            tokens = compiled(
                tokens,
                torch.tensor([t]),
                keys,
                values,
                cross_keys,
                cross_values,
                cross_bias,
                bias[:, :, t : t + 1, :].contiguous(),
            )
            out.append(tokens)
        return torch.stack(out, 1)

    return generate


def measure(shape: str, kind: str, batches: list[int], rounds: int) -> list[dict]:
    import copy

    import torch

    from llmdiet.engines.t5_static_decoding import StaticCacheT5Decoder
    from llmdiet.quantize.torch_dynamic import quantize_dynamic_int8
    from llmdiet.shapes import random_flan_t5

    model = random_flan_t5(shape).eval()
    if kind == "int8":
        model = quantize_dynamic_int8(copy.deepcopy(model))
    static = StaticCacheT5Decoder(model)
    compiled = compiled_decoder(model, NEW_TOKENS)
    rows = []
    for batch in batches:
        ids = torch.randint(5, 30000, (batch, 40), generator=torch.Generator().manual_seed(0))
        ids[:, -1] = 1
        mask = torch.ones_like(ids)
        ways = {
            "generate": lambda ids=ids, mask=mask: model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=NEW_TOKENS,
                min_new_tokens=NEW_TOKENS,
                do_sample=False,
            ),
            "static": lambda ids=ids, mask=mask: static.generate(ids, mask, NEW_TOKENS, NEW_TOKENS),
            "compiled": lambda ids=ids, mask=mask: compiled(ids, mask),
        }
        outputs, times, first = {}, {name: [] for name in ways}, {}
        with torch.inference_mode():
            for name, fn in ways.items():  # warm-up; the compiled step compiles here
                start = time.perf_counter()
                outputs[name] = fn()
                first[name] = time.perf_counter() - start
            for _ in range(rounds):
                for name, fn in ways.items():
                    start = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - start)
        medians = {name: statistics.median(v) for name, v in times.items()}
        row = {
            "shape": shape,
            "kind": kind,
            "batch_size": batch,
            "new_tokens": NEW_TOKENS,
            "rounds": rounds,
            "median_s": medians,
            "times_s": times,
            "first_call_s": first,
            "compile_s": first["compiled"] - medians["compiled"],
            "static_speedup_vs_generate": medians["generate"] / medians["static"],
            "compiled_speedup_vs_static": medians["static"] / medians["compiled"],
            "static_equals_generate": bool(torch.equal(outputs["static"], outputs["generate"])),
            "compiled_equal_share_vs_static": float((outputs["compiled"] == outputs["static"]).float().mean()),
        }
        print(
            json.dumps(
                {
                    k: row[k]
                    for k in (
                        "shape",
                        "kind",
                        "batch_size",
                        "median_s",
                        "compile_s",
                        "static_equals_generate",
                        "compiled_equal_share_vs_static",
                    )
                }
            ),
            flush=True,
        )
        rows.append(row)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="flan-t5-small")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--kinds", nargs="+", default=["fp32", "int8"], choices=["fp32", "int8"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    from bench.run import write_side_study

    rows = []
    for kind in args.kinds:
        rows += measure(args.shape, kind, args.batches, args.rounds)
    write_side_study(
        "bench/static_decoding.py", argv, {"rows": rows}, args.out or f"bench/results/static-decoding-{args.shape}.json"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
