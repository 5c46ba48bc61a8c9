"""A sparse file for unstructured and N:M pruned models: ``model_sparse.safetensors``.

Each pruned matrix is stored as a bitmask of its nonzeros (1 bit per weight, ``numpy.packbits``, row-major) and
its nonzero values in row-major order (their own dtype); every other tensor is stored as it is, tied tensors once. At 50% sparsity
in float32 a pruned matrix takes 1/32 + 1/2 of its dense bytes. :func:`load_sparse` gives back the exact dense
state dict (tested), so the size reported for a pruned model is that of a file that loads, not an estimate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

SPARSE_FILE = "model_sparse.safetensors"
MASK, VALUES, SHAPE = "::mask", "::values", "::shape"


def save_sparse(state_dict: dict[str, torch.Tensor], sparse_names: set[str], path: Path) -> int:
    """Write ``state_dict`` with the matrices in ``sparse_names`` packed; returns the file's bytes."""
    import json

    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}  # tied tensors (T5's shared embedding) are stored once, as save_pretrained does
    stored: dict[tuple, str] = {}
    for name, tensor in state_dict.items():
        key = (tensor.data_ptr(), tuple(tensor.shape), tensor.dtype)
        if key in stored:
            aliases[name] = stored[key]
            continue
        stored[key] = name
        tensor = tensor.detach().cpu().contiguous()
        if name in sparse_names:
            mask = (tensor != 0).reshape(-1)
            tensors[name + MASK] = torch.from_numpy(np.packbits(mask.numpy()))
            tensors[name + VALUES] = tensor.reshape(-1)[mask].clone()
            tensors[name + SHAPE] = torch.tensor(list(tensor.shape), dtype=torch.int64)
        else:
            tensors[name] = tensor.clone()
    save_file(tensors, str(path), metadata={"format": "llmdiet-bitmask-v1", "aliases": json.dumps(aliases)})
    return path.stat().st_size


def load_sparse(path: str | Path) -> dict[str, torch.Tensor]:
    """The dense state dict of a ``model_sparse.safetensors`` (a file or the directory holding it)."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    file = str(path / SPARSE_FILE if path.is_dir() else path)
    tensors = load_file(file)
    with safe_open(file, "pt") as f:
        aliases = json.loads((f.metadata() or {}).get("aliases", "{}"))
    out: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        if key.endswith(MASK):
            name = key[: -len(MASK)]
            shape = tuple(tensors[name + SHAPE].tolist())
            count = int(np.prod(shape))
            mask = torch.from_numpy(np.unpackbits(tensor.numpy())[:count].astype(bool))
            values = tensors[name + VALUES]
            dense = torch.zeros(count, dtype=values.dtype)
            dense[mask] = values
            out[name] = dense.reshape(shape)
        elif not key.endswith((VALUES, SHAPE)):
            out[key] = tensor
    for name, source in aliases.items():
        out[name] = out[source]
    return out
