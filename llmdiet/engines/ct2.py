"""``ct2-int8`` backend: CTranslate2 ``Translator`` over a converted model and the HF tokenizer saved with it.

CTranslate2 takes token strings: sources are tokenised with the HF tokenizer (which appends
``</s>``) and mapped with ``convert_ids_to_tokens``. Results are requested with
``return_end_token=True`` so that ``generated_tokens`` counts EOS like the PyTorch backends
do (``count_generated_tokens``); ``min_decoding_length``/``max_decoding_length`` are the
``min_new_tokens``/``max_new_tokens`` of the settings (both count generated tokens, EOS
included, so ``min == max == N`` gives exactly N tokens in every engine). Inputs are never
truncated (``max_input_length=0``).

Threads on CPU (CTranslate2's best setting measured by ``bench/ct2_settings.py``): ``inter_threads`` = available
cores with ``intra_threads=1``, and every batch split into ``inter_threads`` sub-batches that the workers decode in
parallel (the replicas share one copy of the weights). On 2 cores this was 1.2x (flan-T5-large) to 1.9x
(flan-T5-small) the throughput of one worker with 2 intra-op threads at batch 16. ``threads=N`` restores one worker
with N intra-op threads (the better choice for batch 1 on large models).
"""

from __future__ import annotations

from pathlib import Path

import torch

from llmdiet.artifacts import load_tokenizer, parameters_from_artifact, read_artifact
from llmdiet.engines import BackendError, GenerationSettings, Translation, TranslationBackend, register_backend
from llmdiet.modeling import directory_bytes
from llmdiet.provenance import available_cores, rss_bytes


class CTranslate2Backend(TranslationBackend):
    name = "ct2-int8"

    def __init__(
        self, model_path, device: str = "cpu", compute_type: str | None = None, threads: int | None = None, **_
    ):
        import ctranslate2

        from llmdiet.quantize.ctranslate2_export import COMPUTE_TYPES, TOKENIZER_DIR, check_compute_type

        self.model_path = str(model_path)
        self.artifact = read_artifact(model_path, expected_backend=self.name)
        dev = torch.device(device)
        if dev.type not in COMPUTE_TYPES:
            raise BackendError(f"device '{device}': use cpu or cuda")
        if dev.type == "cuda" and ctranslate2.get_cuda_device_count() == 0:
            raise BackendError(f"device '{device}' asked for, but CTranslate2 sees no CUDA device")
        self.compute_type = compute_type or self.artifact.get("compute_type", COMPUTE_TYPES).get(
            dev.type, COMPUTE_TYPES[dev.type]
        )
        check_compute_type(self.compute_type, self.artifact.get("model_type"))
        supported = ctranslate2.get_supported_compute_types(dev.type, dev.index or 0)
        if self.compute_type not in supported:
            raise BackendError(
                f"compute type '{self.compute_type}' is not supported on {dev.type} here (supported: {sorted(supported)})"
            )
        self.device = dev
        cores = available_cores()
        if dev.type == "cpu" and threads is None:  # data-parallel workers, one thread each
            self.inter_threads, self.threads = cores, 1
        else:
            self.inter_threads, self.threads = 1, threads or cores
        if not (Path(self.model_path) / "model.bin").is_file():
            raise BackendError(
                f"{Path(self.model_path) / 'model.bin'}: missing; the CTranslate2 artifact is incomplete, "
                "re-create it with llmdiet quantize --method ct2-int8 --overwrite_output_dir"
            )
        before = rss_bytes()
        try:
            self.translator = ctranslate2.Translator(
                self.model_path,
                device=dev.type,
                device_index=dev.index or 0,
                compute_type=self.compute_type,
                inter_threads=self.inter_threads,
                intra_threads=self.threads if dev.type == "cpu" else 0,
            )
        except RuntimeError as err:
            raise BackendError(
                f"{self.model_path}: CTranslate2 cannot load the model ({str(err).splitlines()[0]}); "
                "re-create it with llmdiet quantize --method ct2-int8 --overwrite_output_dir"
            ) from None
        self.load_rss_bytes = max(0, rss_bytes() - before)
        self.tokenizer = load_tokenizer(Path(self.model_path) / self.artifact.get("tokenizer_dir", TOKENIZER_DIR))

    def source_tokens(self, sources: list[str], settings: GenerationSettings | None = None) -> list[list[str]]:
        options = settings.tokenizer_options() if settings is not None else {}
        if settings is not None:
            self._target_token(settings)  # sets the tokenizer's source language
        return [self.tokenizer.convert_ids_to_tokens(ids) for ids in self.tokenizer(sources, **options)["input_ids"]]

    def _target_token(self, settings: GenerationSettings) -> str | None:
        """The forced first target token: ``--target_lang``'s, else the model's (``forced_bos_token_id``)."""
        from llmdiet.languages import apply_languages

        forced = apply_languages(self.tokenizer, settings.source_lang, settings.target_lang)
        if forced is not None:
            return self.tokenizer.convert_ids_to_tokens(forced)
        return self.artifact.get("target_prefix")

    def translate(self, sources: list[str], settings: GenerationSettings, on_first_token=None) -> list[Translation]:
        options: dict = {}
        tokens = self.source_tokens(sources, settings)
        target = self._target_token(settings)
        if target:
            options["target_prefix"] = [[target]] * len(sources)
        if self.artifact.get("suppress_sequences"):
            options["suppress_sequences"] = self.artifact["suppress_sequences"]
        if on_first_token is not None and settings.num_beams == 1:  # CTranslate2 calls back per token in greedy search
            options["callback"] = lambda step: on_first_token() if step.step == 0 and step.batch_id == 0 else None
        results = self.translator.translate_batch(
            tokens,
            beam_size=settings.num_beams,
            max_batch_size=-(-len(sources) // self.inter_threads) if self.inter_threads > 1 else 0,
            max_decoding_length=settings.max_new_tokens,
            min_decoding_length=settings.min_new_tokens,
            max_input_length=0,
            return_end_token=True,
            return_scores=False,
            **options,
        )
        out = []
        for result in results:
            tokens = result.hypotheses[0]
            ids = self.tokenizer.convert_tokens_to_ids(tokens)
            out.append(Translation(self.tokenizer.decode(ids, skip_special_tokens=True).strip(), len(tokens)))
        return out

    def size_info(self) -> dict:
        return {
            "parameters": parameters_from_artifact(self.artifact, self.model_path),
            "disk_bytes": directory_bytes(self.model_path),
            "memory_bytes": self.load_rss_bytes,  # resident-memory growth while the translator was created
            "memory_method": "process RSS growth during model load",
        }

    def describe(self) -> dict:
        return {
            "backend": self.name,
            "device": str(self.device),
            "engine": "ctranslate2",
            "compute_type": self.compute_type,
            "intra_threads": self.threads,
            "inter_threads": self.inter_threads,
        }


@register_backend("ct2-int8")
def _ct2(model_path, device="cpu", **options):
    return CTranslate2Backend(model_path, device=device, **options)
