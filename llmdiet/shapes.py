"""Architecture-exact flan-T5 configurations and random-init models built from them.

Size and speed do not depend on weight values, so benchmarks and size tests build
models with the public flan-T5 shapes (gated-gelu, untied embeddings, vocab 32128)
without downloading any weights.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import T5Config, T5ForConditionalGeneration

from llmdiet.compat import t5_as_in_4x

_COMMON = dict(
    vocab_size=32128,
    d_kv=64,
    feed_forward_proj="gated-gelu",
    tie_word_embeddings=False,
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    dropout_rate=0.1,
    layer_norm_epsilon=1e-6,
    pad_token_id=0,
    eos_token_id=1,
    decoder_start_token_id=0,
)

FLAN_T5_SHAPES: dict[str, dict] = {
    "flan-t5-small": dict(d_model=512, d_ff=1024, num_layers=8, num_decoder_layers=8, num_heads=6),
    "flan-t5-base": dict(d_model=768, d_ff=2048, num_layers=12, num_decoder_layers=12, num_heads=12),
    "flan-t5-large": dict(d_model=1024, d_ff=2816, num_layers=24, num_decoder_layers=24, num_heads=16),
}
# Teachers too big for one GPU beside a student: planned (llmdiet.distill.memory_plan, on fake tensors), never
# built or benchmarked here (11 and 44 GB in fp32), so they are kept out of FLAN_T5_SHAPES, the benchmark's list.
PLANNED_FLAN_T5_SHAPES: dict[str, dict] = {
    "flan-t5-xl": dict(d_model=2048, d_ff=5120, num_layers=24, num_decoder_layers=24, num_heads=32),
    "flan-t5-xxl": dict(d_model=4096, d_ff=10240, num_layers=24, num_decoder_layers=24, num_heads=64),
}

# Parameter counts of the released checkpoints, for checking the shapes above.
FLAN_T5_PARAMS = {
    "flan-t5-small": 76_961_152,
    "flan-t5-base": 247_577_856,
    "flan-t5-large": 783_150_080,
    "flan-t5-xl": 2_849_757_184,
    "flan-t5-xxl": 11_135_332_352,
}


def flan_t5_config(name: str, planned: bool = False) -> T5Config:
    """The config of ``google/<name>``; ``planned``: also the xl and xxl shapes (for memory plans)."""
    shapes = {**FLAN_T5_SHAPES, **(PLANNED_FLAN_T5_SHAPES if planned else {})}
    if name not in shapes:
        raise ValueError(f"unknown shape '{name}' (known: {sorted(shapes)})")
    values: dict[str, Any] = {**_COMMON, **shapes[name]}  # Any: transformers 5 types each config field
    return T5Config(**values)


def random_flan_t5(name: str, seed: int = 0, dtype: torch.dtype = torch.float32) -> T5ForConditionalGeneration:
    """A random-init model with the exact architecture of ``google/<name>``."""
    torch.manual_seed(seed)
    model: Any = t5_as_in_4x(T5ForConditionalGeneration(flan_t5_config(name)))
    model = model.to(dtype)
    return model.eval()
