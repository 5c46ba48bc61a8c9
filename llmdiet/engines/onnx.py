"""ONNX Runtime backends: ``onnx-fp32``, ``onnx-dynamic-int8``, ``onnx-static-int8``.

The encoder and the merged decoder (first step and later steps in one graph, weights stored once; artifacts
written before the merge: the two unmerged decoders) run through optimum's ``ORTModelForSeq2SeqLM.generate``, so greedy/beam search, ``min_new_tokens`` and token counting
are exactly those of the PyTorch backends. Sessions use all graph optimisations, one inter-op
thread and ``intra_op_num_threads`` = the cores this process may use (override with ``threads=``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from llmdiet.artifacts import load_tokenizer, read_artifact
from llmdiet.engines import (
    ARTIFACT_FILE,
    BackendError,
    GenerationSettings,
    Translation,
    TranslationBackend,
    register_backend,
)
from llmdiet.engines.torch_engine import generate_translations
from llmdiet.modeling import directory_bytes
from llmdiet.provenance import available_cores, rss_bytes

ONNX_BACKENDS = ("onnx-fp32", "onnx-dynamic-int8", "onnx-static-int8")


def _ort_load_errors() -> tuple[type[Exception], ...]:
    """ONNX Runtime's own exception types for unreadable or invalid graph files (truncated, corrupted)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    return tuple(
        getattr(state, n) for n in ("InvalidProtobuf", "InvalidGraph", "Fail", "NoSuchFile") if hasattr(state, n)
    )


class OnnxSeq2SeqBackend(TranslationBackend):
    def __init__(self, model_path, name: str, device: str = "cpu", threads: int | None = None, **_):
        import onnxruntime as ort
        from optimum.onnxruntime import ORTModelForSeq2SeqLM

        self.name = name
        self.model_path = str(model_path)
        # A plain optimum export (no llmdiet artifact) is accepted; a mismatched artifact is not.
        self.artifact = (
            read_artifact(model_path, expected_backend=name) if (Path(model_path) / ARTIFACT_FILE).is_file() else {}
        )
        dev = torch.device(device)
        if dev.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendError(
                    f"device '{device}': this onnxruntime build has no CUDAExecutionProvider "
                    f"(available: {ort.get_available_providers()}); install onnxruntime-gpu"
                )
            provider = "CUDAExecutionProvider"
        elif dev.type == "cpu":
            provider = "CPUExecutionProvider"
        else:
            raise BackendError(f"device '{device}': use cpu or cuda")
        self.device = dev
        self.threads = threads or available_cores()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        missing = [f for f in self.artifact.get("onnx_files", []) if not (Path(model_path) / f).is_file()]
        if missing:
            raise BackendError(
                f"{model_path}: the ONNX artifact lacks {missing}; re-create it with llmdiet quantize --overwrite_output_dir"
            )
        from llmdiet.quantize.onnx_runtime import DECODER_MERGED

        self.merged = (Path(model_path) / DECODER_MERGED).is_file()
        before = rss_bytes()
        try:
            self.model = ORTModelForSeq2SeqLM.from_pretrained(
                self.model_path,
                use_cache=True,
                use_merged=self.merged,
                provider=provider,
                session_options=options,
            )
        except (OSError, ValueError, RuntimeError, *_ort_load_errors()) as err:  # type: ignore[misc]
            raise BackendError(f"{model_path}: cannot load ONNX graphs: {str(err).splitlines()[0]}") from None
        head_dim = getattr(self.model.config, "d_kv", None)
        if self.merged and head_dim and getattr(self.model.decoder, "embed_size_per_head", head_dim) != head_dim:
            # optimum sizes the empty first-step cache fed to the merged graph as d_model // heads; T5 has its own
            # d_kv (flan-T5-small: 512 // 6 = 85, not 64), which the graph's inputs expect
            self.model.decoder.embed_size_per_head = head_dim
        self.load_rss_bytes = max(0, rss_bytes() - before)
        self.tokenizer = load_tokenizer(model_path)

    def translate(self, sources: list[str], settings: GenerationSettings, on_first_token=None) -> list[Translation]:
        return generate_translations(
            self.model, self.tokenizer, self.device, sources, settings, on_first_token=on_first_token
        )

    def size_info(self) -> dict:
        onnx_bytes = sum(f.stat().st_size for f in Path(self.model_path).glob("*.onnx*"))
        return {
            "parameters": self.artifact.get("parameters"),
            "disk_bytes": directory_bytes(self.model_path),
            "onnx_bytes": onnx_bytes,
            # ORT holds every graph's weights in memory, so the graph files' size is a lower bound; RSS growth
            # while the sessions were created can read lower when freed memory was reused, hence the max.
            "memory_bytes": max(self.load_rss_bytes, onnx_bytes),
            "memory_method": "max(process RSS growth during session creation, size of the loaded .onnx files)",
        }

    def describe(self) -> dict:
        return {
            "backend": self.name,
            "device": str(self.device),
            "engine": "onnxruntime",
            "provider": self.model.providers[0] if getattr(self.model, "providers", None) else None,
            "intra_op_threads": self.threads,
            "quantization": self.artifact.get("quantization", "none"),
            "decoder": "merged (decoder_model_merged.onnx)" if self.merged else "unmerged pair",
        }


def _factory(name):
    def make(model_path, device="cpu", **options):
        return OnnxSeq2SeqBackend(model_path, name, device=device, **options)

    return make


for _name in ONNX_BACKENDS:
    register_backend(_name)(_factory(_name))
