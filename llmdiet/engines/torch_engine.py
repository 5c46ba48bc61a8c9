"""Plain PyTorch backends: ``torch-fp32`` and ``torch-bf16`` (never fp16: T5 overflows)."""

from __future__ import annotations

import torch

from llmdiet.engines import BackendError, GenerationSettings, Translation, TranslationBackend, register_backend
from llmdiet.modeling import directory_bytes, load_seq2seq, module_bytes


def count_generated_tokens(sequences: torch.Tensor, eos_token_id: int) -> list[int]:
    """Generated tokens per row of ``generate`` output, up to and including EOS.

    The decoder start token and the padding after EOS (rows that finished early) are excluded.
    """
    counts = []
    for row in sequences[:, 1:].tolist():
        counts.append(row.index(eos_token_id) + 1 if eos_token_id in row else len(row))
    return counts


@torch.inference_mode()
def generate_translations(model, tokenizer, device, sources: list[str], settings: GenerationSettings) -> list[Translation]:
    """One batch through a ``generate()``-style model (transformers or optimum ONNX Runtime)."""
    enc = tokenizer(sources, return_tensors="pt", padding=True, **settings.tokenizer_options()).to(device)
    out = model.generate(
        **enc, max_new_tokens=settings.max_new_tokens, min_new_tokens=settings.min_new_tokens or None,
        num_beams=settings.num_beams, do_sample=False,
    )
    texts = tokenizer.batch_decode(out, skip_special_tokens=True)
    counts = count_generated_tokens(out, tokenizer.eos_token_id)
    return [Translation(t.strip(), c) for t, c in zip(texts, counts)]


class TorchSeq2SeqBackend(TranslationBackend):
    """Runs a ``transformers`` seq2seq model (or a ready ``nn.Module``) with ``generate``."""

    def __init__(self, model_path, device: str = "cpu", dtype: torch.dtype = torch.float32, model=None, tokenizer=None,
                 name=None, tokenizer_path: str | None = None):
        self.name = name or {torch.float32: "torch-fp32", torch.bfloat16: "torch-bf16"}.get(dtype, "torch")
        self.model_path = str(model_path)
        self.device = torch.device(device)
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendError(f"device '{device}' asked for, but CUDA is not available on this machine")
        if model is None:
            model, tokenizer = load_seq2seq(model_path, dtype=dtype, tokenizer_path=tokenizer_path)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.dtype = dtype

    def translate(self, sources: list[str], settings: GenerationSettings) -> list[Translation]:
        return generate_translations(self.model, self.tokenizer, self.device, sources, settings)

    def size_info(self) -> dict:
        return {
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "disk_bytes": directory_bytes(self.model_path),
            "memory_bytes": module_bytes(self.model),
        }

    def describe(self) -> dict:
        return {"backend": self.name, "device": str(self.device), "dtype": str(self.dtype).replace("torch.", "")}


@register_backend("torch-fp32")
def _fp32(model_path, device="cpu", **kw):
    return TorchSeq2SeqBackend(model_path, device=device, dtype=torch.float32, **kw)


@register_backend("torch-bf16")
def _bf16(model_path, device="cpu", **kw):
    return TorchSeq2SeqBackend(model_path, device=device, dtype=torch.bfloat16, **kw)
