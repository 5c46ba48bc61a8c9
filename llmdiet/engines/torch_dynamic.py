"""``dynamic-int8`` backend: a model from ``llmdiet quantize --method dynamic-int8``, run with ``generate`` on CPU."""

from __future__ import annotations

import torch

from llmdiet.artifacts import load_tokenizer, parameters_from_artifact, read_artifact
from llmdiet.engines import BackendError, register_backend
from llmdiet.engines.torch_engine import TorchSeq2SeqBackend
from llmdiet.modeling import directory_bytes, module_bytes


class DynamicInt8Backend(TorchSeq2SeqBackend):
    def __init__(
        self,
        model_path,
        device: str = "cpu",
        decoding: str = "static",
        draft=None,
        draft_lookahead=4,
        drop_finished=False,
        activation_scales="per_row",
        **_,
    ):
        from llmdiet.quantize.torch_dynamic import load_dynamic_int8

        if torch.device(device).type != "cpu":
            raise BackendError(
                f"dynamic-int8 runs on CPU only (torch.ao dynamic quantized kernels); got device '{device}'"
            )
        self.artifact = read_artifact(model_path, expected_backend="dynamic-int8")
        # per_row (default): every row's output is independent of the rest of the batch, so speculative
        # verification and dropping finished rows give this model's own greedy outputs (llmdiet.quantize.per_row_int8)
        self.activation_scales = activation_scales
        model = load_dynamic_int8(model_path, activation_scales=activation_scales)
        super().__init__(
            model_path,
            device="cpu",
            dtype=torch.float32,
            model=model,
            tokenizer=load_tokenizer(model_path),
            name="dynamic-int8",
            decoding=decoding,
            draft=draft,
            draft_lookahead=draft_lookahead,
            drop_finished=drop_finished,
        )

    def size_info(self) -> dict:
        return {
            "parameters": parameters_from_artifact(self.artifact, self.model_path),
            "disk_bytes": directory_bytes(self.model_path),
            "memory_bytes": module_bytes(self.model),  # counts the packed int8 weights
        }

    def describe(self) -> dict:
        return {
            **super().describe(),
            "weights": "int8 (torch.ao dynamic, Linear layers)",
            "activations": "float32, int8 " + self.activation_scales.replace("_", " "),
            "quantized_engine": torch.backends.quantized.engine,
        }

    def lossless(self) -> bool:
        """Per-row activation scales make each row's int8 output a function of that row alone, so verifying k+1
        drafted tokens at once gives what decoding them one by one gives (the demo pair: every output identical,
        tests/test_per_row_int8.py); per-batch scales do not."""
        return self.activation_scales == "per_row"


@register_backend("dynamic-int8")
def _dynamic_int8(model_path, device="cpu", **options):
    return DynamicInt8Backend(model_path, device=device, **options)
