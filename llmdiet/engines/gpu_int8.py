"""``quanto-int8`` and ``torchao-int8`` backends: int8 models from ``llmdiet quantize``, run with ``generate``.

Both are meant for GPUs and also run on CPU (slowly: quanto falls back to unfused kernels, torchao
needs ``torch.compile`` to pay off on CPU).
"""

from __future__ import annotations

import torch

from llmdiet.artifacts import load_tokenizer, parameters_from_artifact, read_artifact
from llmdiet.engines import register_backend
from llmdiet.engines.torch_engine import TorchSeq2SeqBackend
from llmdiet.modeling import directory_bytes


class TorchInt8Backend(TorchSeq2SeqBackend):
    """A quantized ``transformers`` model whose weights are tensor subclasses (quanto or torchao)."""

    def __init__(
        self,
        model_path,
        name: str,
        device: str = "cpu",
        decoding: str = "static",
        draft=None,
        draft_lookahead=4,
        drop_finished=False,
        **_,
    ):
        from llmdiet.quantize import gpu_int8

        self.artifact = read_artifact(model_path, expected_backend=name)
        if name == "quanto-int8":
            dtype = getattr(torch, self.artifact.get("dtype", "float32"))
            model = gpu_int8.load_quanto(model_path, device=device, dtype=dtype)
        else:
            dtype = torch.bfloat16
            model = gpu_int8.load_torchao(model_path, device=device)
        super().__init__(
            model_path,
            device=device,
            dtype=dtype,
            model=model,
            tokenizer=load_tokenizer(model_path),
            name=name,
            decoding=decoding,
            draft=draft,
            draft_lookahead=draft_lookahead,
            drop_finished=drop_finished,
        )

    def size_info(self) -> dict:
        from llmdiet.quantize.gpu_int8 import model_storage_bytes

        return {
            "parameters": parameters_from_artifact(self.artifact, self.model_path),
            "disk_bytes": directory_bytes(self.model_path),
            "memory_bytes": model_storage_bytes(self.model),  # int8 codes + scales of the quantized weights
        }

    def describe(self) -> dict:
        return {**super().describe(), "weights": "int8", "activations": self.artifact.get("activations")}


@register_backend("quanto-int8")
def _quanto(model_path, device="cpu", **options):
    return TorchInt8Backend(model_path, "quanto-int8", device=device, **options)


@register_backend("torchao-int8")
def _torchao(model_path, device="cpu", **options):
    return TorchInt8Backend(model_path, "torchao-int8", device=device, **options)
