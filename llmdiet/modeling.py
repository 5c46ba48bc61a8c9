"""Loading models and tokenizers, with clear errors, and measuring their size."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from llmdiet.compat import T5_TYPES, t5_as_in_4x

if TYPE_CHECKING:  # torch and transformers load only when a model does
    import torch


class ModelLoadError(ValueError):
    """A user-facing problem loading a model (not found, not seq2seq, offline, ...)."""


def load_seq2seq(
    name_or_path: str,
    dtype: torch.dtype | None = None,
    tokenizer_path: str | None = None,
    placement: dict | None = None,
):
    """``(model, tokenizer)`` for a hub id or local directory; refuses non-seq2seq models clearly.

    fp16 is refused for T5-family models: they overflow to NaN in float16. ``placement``: accelerate's
    ``device_map``/``max_memory``/``offload_folder`` for a model placed across devices
    (``llmdiet.distill.teacher_placement``).
    """
    import torch
    from transformers import AutoConfig, AutoModelForSeq2SeqLM

    dtype = torch.float32 if dtype is None else dtype

    name_or_path = str(name_or_path)
    local = Path(name_or_path)
    if local.is_dir() and not (local / "config.json").is_file():
        raise ModelLoadError(
            f"'{name_or_path}' has no config.json: not a saved model (save_pretrained) or llmdiet artifact directory"
        )
    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as err:
        hint = " (local path does not exist)" if looks_local(name_or_path) and not local.exists() else ""
        first = str(err).splitlines()[0]
        if "Unrecognized model" in first or len(first) > 300:  # transformers lists every model type it knows
            first = "its config.json has no known model_type (expected a seq2seq model such as t5, marian, bart)"
        raise ModelLoadError(f"cannot load a model config from '{name_or_path}'{hint}: {first}") from None
    if not getattr(config, "is_encoder_decoder", False):
        raise ModelLoadError(
            f"'{name_or_path}' is a '{config.model_type}' model, not a sequence-to-sequence (encoder-decoder) model"
        )
    if dtype == torch.float16 and config.model_type in ("t5", "mt5", "umt5"):
        raise ModelLoadError(
            "float16 is not supported for T5 models (activations overflow to NaN); use bfloat16 or float32"
        )
    from safetensors import SafetensorError

    try:
        with no_local_progress_bar(local.is_dir()), quiet_untied_t5_notice(config.model_type):
            model = t5_as_in_4x(AutoModelForSeq2SeqLM.from_pretrained(name_or_path, dtype=dtype, **(placement or {})))
    except (OSError, ValueError, RuntimeError, SafetensorError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ModelLoadError(
            f"cannot load the weights of '{name_or_path}' (missing, truncated or corrupted file?): {first}"
        ) from None
    tokenizer = load_tokenizer_for(name_or_path, tokenizer_path)
    return model.eval(), tokenizer


@contextmanager
def no_local_progress_bar(active: bool = True):
    """Hide transformers 5's "Loading weights" bar for a local checkpoint (one line per error stays one line); hub
    downloads keep their progress bars."""
    if not active:
        yield
        return
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


@contextmanager
def quiet_untied_t5_notice(model_type: str):
    """transformers 5 warns on every flan-T5/mT5 load that their lm_head is not tied (it forces the config to say
    tied; llmdiet keeps them untied on purpose): that warning is hidden, all others stay."""
    import logging

    if model_type not in T5_TYPES:
        yield
        return
    log = logging.getLogger("transformers.modeling_utils")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


# files any tokenizer directory has at least one of (fast, SentencePiece, Marian, BPE/WordPiece vocabularies)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "source.spm",
    "vocab.json",
    "vocab.txt",
)


def load_tokenizer_for(name_or_path: str, tokenizer_path: str | None = None):
    """The tokenizer of ``tokenizer_path`` or else of the model itself; one clear line when there is none."""
    from transformers import AutoTokenizer

    source = str(tokenizer_path or name_or_path)
    try:
        if Path(source).is_dir() and not any((Path(source) / f).is_file() for f in TOKENIZER_FILES):
            # transformers 5 builds an empty default tokenizer from config.json alone: refuse instead
            raise OSError(f"{source}: none of {', '.join(TOKENIZER_FILES)}")
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, TypeError) as err:
        if tokenizer_path:
            raise ModelLoadError(
                f"--tokenizer {tokenizer_path}: cannot load a tokenizer there: {str(err).splitlines()[0]}"
            ) from None
        raise ModelLoadError(
            f"'{name_or_path}' has no usable tokenizer files (tokenizer.json / spiece.model); pass --tokenizer with the "
            "directory or hub id of the model's tokenizer (e.g. the model it was trained from)"
        ) from None


def looks_local(name: str) -> bool:
    """Whether ``name`` is meant as a local path rather than a hub id ``owner/name``."""
    return name.startswith((".", "/", "~")) or os.sep in name.strip("/").split("/", 1)[-1] or name.count("/") != 1


def parse_dtype(name: str) -> torch.dtype:
    import torch

    table = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if name not in table:
        raise ValueError(f"unknown dtype '{name}' (use float32 or bfloat16)")
    return table[name]


# What a model or artifact needs to run: weights, engine files, configs and tokenizer files, by suffix.
MODEL_SUFFIXES = {
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".onnx",
    ".onnx_data",
    ".data",
    ".json",
    ".model",
    ".spm",
    ".txt",
    ".vocab",
}
# By-products that a training, quantization or eval run leaves beside the model.
BYPRODUCTS = {
    # llmdiet prune's packed copy of a pruned model's weights: another form of the same model, reported on its own
    # (llmdiet_prune.json "sparse_bytes"); the model as loaded is model.safetensors
    "model_sparse.safetensors",
    "training_args.bin",
    "training_log.json",
    "trainer_state.json",
    "all_results.json",
    "train_results.json",
    "eval_results.json",
    "results.json",
    "statistics.json",
    "eval_settings.json",
    "optimizer.pt",
    "scheduler.pt",
    "rng_state.pth",
    "skipped_rows.json",
    "README.md",
}


def counted_files(path: str | Path) -> list[str]:
    """The files of a model/artifact directory that its size counts (relative paths, sorted).

    Counted: weights, engine files, configs and tokenizer files (by suffix, :data:`MODEL_SUFFIXES`). Never:
    logs, plots, model cards and other by-products (:data:`BYPRODUCTS`, any other suffix), Trainer checkpoints
    (``checkpoint-*``), TensorBoard ``runs/``, eval run directories, and nested models or artifacts (a sub-directory
    with its own ``config.json`` or ``llmdiet_artifact.json``, e.g. an artifact saved inside the model directory).
    """
    root = Path(path)
    if root.is_file():
        return [root.name]
    if not root.is_dir():
        return []
    out = []

    def walk(directory: Path) -> None:
        for entry in sorted(directory.iterdir()):
            if entry.is_file():
                if entry.suffix in MODEL_SUFFIXES and entry.name not in BYPRODUCTS and not entry.name.endswith(".tmp"):
                    out.append(str(entry.relative_to(root)))
            elif entry.is_dir() and not _is_run_output(entry) and not _is_nested_model(entry):
                walk(entry)

    walk(root)
    return out


def directory_bytes(path: str | Path) -> int:
    """On-disk size of a model artifact directory: the bytes of :func:`counted_files` (0 for a hub id)."""
    root = Path(path)
    if root.is_file():
        return root.stat().st_size
    return sum((root / f).stat().st_size for f in counted_files(root))


def _is_run_output(directory: Path) -> bool:
    return (
        directory.name.startswith("checkpoint-")
        or directory.name == "runs"
        or (directory / "eval_settings.json").exists()
    )


def _is_nested_model(directory: Path) -> bool:
    return (directory / "config.json").exists() or (directory / "llmdiet_artifact.json").exists()


def module_bytes(module: torch.nn.Module) -> int:
    """Bytes held by a module's parameters and buffers, including packed quantized weights."""
    total = sum(t.numel() * t.element_size() for t in module.parameters())
    total += sum(t.numel() * t.element_size() for t in module.buffers())
    for sub in module.modules():  # torch.ao dynamic-quantized Linear keeps weights in a packed param
        packed = getattr(sub, "_packed_params", None)
        if packed is not None and hasattr(packed, "_weight_bias"):
            w, b = packed._weight_bias()
            total += w.numel() * w.element_size() + (b.numel() * b.element_size() if b is not None else 0)
    return total


def resolve_model(name: str) -> str:
    """Hub ids and paths pass through; ``llmdiet-demo:teacher|student`` name the shipped demo models (hash-checked)."""
    from llmdiet.demo import DEMO_MODEL_PREFIX, shipped_demo_assets

    if not name.startswith(DEMO_MODEL_PREFIX):
        return name
    from llmdiet.config import ConfigError

    role = name[len(DEMO_MODEL_PREFIX) :]
    if role not in ("teacher", "student"):
        raise ConfigError(f"unknown demo model '{name}' (use {DEMO_MODEL_PREFIX}teacher or {DEMO_MODEL_PREFIX}student)")
    assets = shipped_demo_assets()
    return str(assets.teacher if role == "teacher" else assets.student)
