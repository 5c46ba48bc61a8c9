"""Plain PyTorch backends: ``torch-fp32`` and ``torch-bf16`` (never fp16: T5 overflows).

Greedy decoding of T5 models goes through :class:`~llmdiet.engines.t5_static_decoding.StaticCacheT5Decoder`
(``decoding="static"``, the default: same output ids as ``generate``, faster); beam search, other architectures
and ``decoding="generate"`` use ``transformers``' ``generate``.
"""

from __future__ import annotations

import logging

import torch

from llmdiet.engines import BackendError, GenerationSettings, Translation, TranslationBackend, register_backend
from llmdiet.modeling import directory_bytes, load_seq2seq, module_bytes

logger = logging.getLogger(__name__)


def count_generated_tokens(sequences: torch.Tensor, eos_token_id: int) -> list[int]:
    """Generated tokens per row of ``generate`` output, up to and including EOS.

    The decoder start token and the padding after EOS (rows that finished early) are excluded.
    """
    counts = []
    for row in sequences[:, 1:].tolist():
        counts.append(row.index(eos_token_id) + 1 if eos_token_id in row else len(row))
    return counts


DECODINGS = ("static", "generate")


class _FirstToken:
    """A ``generate`` streamer that only records when the first generated token arrives (the prompt comes first)."""

    def __init__(self, on_first_token):
        self.on_first_token, self.calls = on_first_token, 0

    def put(self, value):
        self.calls += 1
        if self.calls == 2:  # call 1 is the decoder start token
            self.on_first_token()

    def end(self):
        pass


@torch.inference_mode()
def generate_translations(
    model,
    tokenizer,
    device,
    sources: list[str],
    settings: GenerationSettings,
    static_decoder=None,
    on_first_token=None,
    drop_finished: bool = False,
) -> list[Translation]:
    """One batch through a ``generate()``-style model (transformers or optimum ONNX Runtime).

    With ``static_decoder`` (a :class:`StaticCacheT5Decoder`) greedy batches use it instead of ``generate``.
    ``on_first_token()`` is called once the first token of the batch is chosen (time-to-first-token).
    """
    from llmdiet.languages import apply_languages

    forced_bos = apply_languages(tokenizer, settings.source_lang, settings.target_lang)
    enc = tokenizer(sources, return_tensors="pt", padding=True, **settings.tokenizer_options()).to(device)
    if static_decoder is not None and settings.num_beams == 1 and forced_bos is None:
        out = static_decoder.generate(
            enc["input_ids"],
            enc["attention_mask"],
            settings.max_new_tokens,
            settings.min_new_tokens,
            on_token=(lambda step: on_first_token() if step == 0 else None) if on_first_token else None,
            **({"drop_finished": True} if drop_finished else {}),
        )
    else:
        streamer = (
            _FirstToken(on_first_token) if on_first_token and len(sources) == 1 and settings.num_beams == 1 else None
        )
        out = model.generate(
            **enc,
            max_new_tokens=settings.max_new_tokens,
            min_new_tokens=settings.min_new_tokens or None,
            num_beams=settings.num_beams,
            do_sample=False,
            **({"streamer": streamer} if streamer else {}),
            **({"forced_bos_token_id": forced_bos} if forced_bos is not None else {}),
        )
    texts = tokenizer.batch_decode(out, skip_special_tokens=True)
    counts = count_generated_tokens(out, tokenizer.eos_token_id)
    return [Translation(t.strip(), c) for t, c in zip(texts, counts)]


class TorchSeq2SeqBackend(TranslationBackend):
    """Runs a ``transformers`` seq2seq model (or a ready ``nn.Module``) with ``generate``."""

    def __init__(
        self,
        model_path,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        model=None,
        tokenizer=None,
        name=None,
        tokenizer_path: str | None = None,
        decoding: str = "static",
        draft: str | None = None,
        draft_lookahead: int = 4,
        drop_finished: bool = False,
    ):
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
        if decoding not in DECODINGS:
            raise BackendError(f"decoding '{decoding}': use one of {', '.join(DECODINGS)}")
        from llmdiet.engines.t5_static_decoding import StaticCacheT5Decoder, static_decoding_unsupported

        self.static_unsupported = (
            static_decoding_unsupported(self.model) if decoding == "static" else "decoding='generate' asked for"
        )
        self.static_decoder = None if self.static_unsupported else StaticCacheT5Decoder(self.model)
        if decoding == "static" and self.static_unsupported:
            logger.info(
                "%s: static decoder not used (%s); decoding with transformers generate",
                self.name,
                self.static_unsupported,
            )
        if drop_finished and (self.static_decoder is None or draft is not None):
            why = self.static_unsupported or "with a draft model"
            raise BackendError(f"drop_finished needs llmdiet's static decoder without a draft (not used here: {why})")
        self.drop_finished = drop_finished
        self.draft_path, self.speculative = draft, None
        if draft is not None:
            self.speculative = self._speculative(draft, draft_lookahead)
            self.static_decoder = self.speculative  # the same generate() signature

    def _speculative(self, draft: str, lookahead: int):
        """A :class:`SpeculativeDecoder` with ``draft`` (any torch artifact or model directory) proposing tokens."""
        from llmdiet.engines import load_backend
        from llmdiet.engines.speculative import SpeculativeDecoder

        if self.static_decoder is None:
            raise BackendError(
                f"--draft_model needs llmdiet's static decoder for the model being evaluated, which is not used "
                f"here ({self.static_unsupported}); drop --draft_model or use --decoding static with a T5 model"
            )
        drafter = load_backend("auto", draft, device=str(self.device), decoding="static")
        if not isinstance(drafter, TorchSeq2SeqBackend) or drafter.static_decoder is None:
            why = getattr(drafter, "static_unsupported", f"backend {drafter.name} is not a torch backend")
            raise BackendError(f"--draft_model {draft}: cannot draft ({why}); give a T5 torch model or artifact")
        if drafter.tokenizer.get_vocab() != self.tokenizer.get_vocab():
            raise BackendError(
                f"--draft_model {draft}: its tokenizer differs from the evaluated model's; the draft must share "
                "the teacher's vocabulary (e.g. a student distilled from it)"
            )
        try:
            return SpeculativeDecoder(self.static_decoder, drafter.static_decoder, lookahead=lookahead)
        except ValueError as err:
            raise BackendError(f"--draft_model {draft}: {err}") from None

    def decoding_stats(self) -> dict | None:
        """Speculative decoding's counts since the last call (None without a draft), and resets them."""
        if self.speculative is None:
            return None
        from llmdiet.engines.speculative import SpeculativeDecoder

        return SpeculativeDecoder.summarize(self.speculative.reset_stats())

    def translate(self, sources: list[str], settings: GenerationSettings, on_first_token=None) -> list[Translation]:
        return generate_translations(
            self.model,
            self.tokenizer,
            self.device,
            sources,
            settings,
            static_decoder=self.static_decoder,
            on_first_token=on_first_token,
            drop_finished=self.drop_finished,
        )

    def size_info(self) -> dict:
        return {
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "disk_bytes": directory_bytes(self.model_path),
            "memory_bytes": module_bytes(self.model),
        }

    def describe(self) -> dict:
        return {
            "backend": self.name,
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
            "decoding": self._decoding_description(),
            **({"draft": self.draft_path, "lossless": self.lossless()} if self.speculative else {}),
        }

    def _decoding_description(self) -> str:
        if self.speculative is not None:
            return (
                f"speculative (llmdiet static KV caches): draft {self.draft_path} proposes, this model verifies; "
                f"lookahead {self.speculative.lookahead} adaptive up to {self.speculative.max_lookahead} "
                "(greedy; beam search uses generate)"
            )
        if self.static_decoder is not None:
            dropped = ", finished rows dropped from the batch" if self.drop_finished else ""
            return f"llmdiet static KV cache{dropped} (greedy; beam search uses generate)"
        return f"transformers generate ({self.static_unsupported})"

    def lossless(self) -> bool:
        """Whether speculative outputs are this model's own greedy outputs: float weights and activations (chunked
        verification only changes summation order). dynamic-int8 overrides this: lossless with per-row activation
        scales, not with per-batch ones (which depend on the chunk)."""
        return self.dtype in (torch.float32, torch.bfloat16) and self.name in ("torch-fp32", "torch-bf16")


@register_backend("torch-fp32")
def _fp32(model_path, device="cpu", **kw):
    return TorchSeq2SeqBackend(model_path, device=device, dtype=torch.float32, **kw)


@register_backend("torch-bf16")
def _bf16(model_path, device="cpu", **kw):
    return TorchSeq2SeqBackend(model_path, device=device, dtype=torch.bfloat16, **kw)
