"""Cached teacher logits: the teacher's top-k log-probabilities per target token, computed once.

With fixed targets (references, or sequence-level pseudo-labels) the teacher's distribution at
every target position never changes, so the teacher forward can be paid once instead of every
step of every epoch. For each training example we store, for each of its label positions, the
ids and log-probabilities (at the distillation temperature) of the teacher's k most likely tokens;
:func:`llmdiet.distill.losses.topk_distillation_loss` then trains against them with a "tail" bucket for
the remaining mass. Not valid for on-policy methods, where the targets change.

On disk (``DIR``): ``meta.json`` (teacher, k, temperature, number of examples, a fingerprint of
the tokenised labels) and ``shard-NNNNN.safetensors`` files, each with the flat ``ids`` (int32),
``logprobs`` (float16) and per-example ``lengths`` of ``shard_size`` consecutive examples. Shards are
written atomically, so a killed build resumes at the first missing shard.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from llmdiet.compat import decoder_inputs_from_labels
from llmdiet.config import ConfigError
from llmdiet.distill.teacher_placement import input_device
from llmdiet.fingerprint import check_parts

logger = logging.getLogger(__name__)

INDEX_COLUMN = "example_index"


class TeacherCacheError(ConfigError):
    """The cache does not match the run (other teacher, data, tokenizer, k, temperature) or is incomplete."""


def labels_fingerprint(labels: list[list[int]]) -> str:
    h = hashlib.sha256()
    for row in labels:
        h.update(torch.tensor(row, dtype=torch.int32).numpy().tobytes())
        h.update(b"|")
    return h.hexdigest()[:16]


@torch.no_grad()
def _shard_tensors(
    teacher: Any, dataset: Any, collator: Any, start: int, stop: int, k: int, temperature: float, batch_size: int
) -> dict[str, torch.Tensor]:
    """The teacher's top-k log-probs (float16) and ids (int32) of rows [start, stop), concatenated over tokens."""
    device = input_device(teacher)  # a teacher placed by accelerate: its first layers' device
    ids, logprobs, lengths = [], [], []
    for b in range(start, stop, batch_size):
        feats = [
            {key: dataset[i][key] for key in ("input_ids", "attention_mask", "labels")}
            for i in range(b, min(b + batch_size, stop))
        ]
        batch = {key: v.to(device) for key, v in collator(feats).items()}
        labels = batch.pop("labels")
        if "decoder_input_ids" not in batch:  # collators add them only for models with prepare_decoder_input_ids...
            batch["decoder_input_ids"] = decoder_inputs_from_labels(teacher, labels)
        logits = teacher(**batch, use_cache=False).logits.float()
        top = torch.log_softmax(logits / temperature, dim=-1).topk(k, dim=-1)
        for row, feat in enumerate(feats):
            n = len(feat["labels"])
            assert bool((labels[row, :n] != -100).all())
            ids.append(top.indices[row, :n].to(torch.int32).cpu())
            logprobs.append(top.values[row, :n].to(torch.float16).cpu())
            lengths.append(n)
    return {"ids": torch.cat(ids), "logprobs": torch.cat(logprobs), "lengths": torch.tensor(lengths, dtype=torch.int64)}


@torch.no_grad()
def build_teacher_cache(
    teacher: Any,
    dataset: Any,
    collator: Any,
    out_dir: str | Path,
    k: int = 32,
    temperature: float = 1.0,
    batch_size: int = 16,
    shard_size: int = 512,
    teacher_name: str = "",
    teacher_identity: dict | None = None,
    teacher_dtype: str = "float32",
    rebuild: bool = False,
) -> Path:
    """Write (or finish writing) the top-k cache of ``teacher`` over a tokenised ``dataset``.

    The cache is keyed by everything that changes its content: the teacher's identity (content hashes of its
    config, weights and tokenizer, not its path), its dtype, k, T, and the tokenised inputs and labels (which
    cover the data rows, the prefix, the truncation lengths and the tokenizer). A mismatch stops with the
    changed parts named; ``rebuild`` (``--rebuild_caches``) deletes the old cache first.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    out = Path(out_dir)
    meta_path = out / "meta.json"
    if rebuild and out.is_dir():
        for old in [meta_path, *out.glob("shard-*.safetensors"), *out.glob("shard-*.tmp")]:
            old.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "teacher": teacher_name,
        "teacher_identity": teacher_identity or {"name": teacher_name},
        "teacher_dtype": teacher_dtype,
        "k": k,
        "temperature": temperature,
        "num_examples": len(dataset),
        "shard_size": shard_size,
        "labels_fingerprint": labels_fingerprint(dataset["labels"]),
        "inputs_fingerprint": labels_fingerprint(dataset["input_ids"]),
    }
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        check_parts(
            {k_: v for k_, v in old.items() if k_ != "teacher"},
            {k_: v for k_, v in meta.items() if k_ != "teacher"},
            out,
            "pass --rebuild_caches true to rebuild it, or use another --teacher_cache directory",
            error=TeacherCacheError,
        )
    else:
        meta_path.write_text(json.dumps(meta, indent=2))
    teacher.eval()
    num_shards = (len(dataset) + shard_size - 1) // shard_size
    for shard in range(num_shards):
        path = out / f"shard-{shard:05d}.safetensors"
        if path.exists():
            continue
        start, stop = shard * shard_size, min((shard + 1) * shard_size, len(dataset))
        tmp = path.with_suffix(".tmp")
        save_file(_shard_tensors(teacher, dataset, collator, start, stop, k, temperature, batch_size), str(tmp))
        os.replace(tmp, path)  # a shard exists only once complete: a killed build resumes at the next one
        logger.info("teacher cache: shard %d/%d written (%s)", shard + 1, num_shards, path.name)
    return out


def build_teacher_cache_once(teacher: Any, dataset: Any, collator: Any, out_dir: str | Path, **options: Any) -> Path:
    """:func:`build_teacher_cache` under a lock on ``out_dir``: of several processes (study jobs, on one machine or
    sharing a file system) that need the same cache, the first builds it and the others wait (one line naming
    the builder), then find every shard written and reuse them; a cache built with other settings is refused."""
    from llmdiet.locking import directory_lock

    with directory_lock(out_dir, "teacher cache build", wait=True):
        return build_teacher_cache(teacher, dataset, collator, out_dir, **options)


class TeacherCache:
    """Read access to a finished cache: per-example (length, k) ids and log-probs."""

    def __init__(self, cache_dir: str | Path):
        self.dir = Path(cache_dir)
        meta_path = self.dir / "meta.json"
        if not meta_path.exists():
            raise TeacherCacheError(f"{self.dir}: no meta.json; build the cache first")
        self.meta = json.loads(meta_path.read_text())
        self.k, self.temperature = self.meta["k"], self.meta["temperature"]
        self._ids: list[torch.Tensor] = []
        self._logprobs: list[torch.Tensor] = []
        self._offsets: list[int] = []
        self._lengths: list[int] = []
        n = self.meta["num_examples"]
        for shard in range((n + self.meta["shard_size"] - 1) // self.meta["shard_size"]):
            path = self.dir / f"shard-{shard:05d}.safetensors"
            if not path.exists():
                raise TeacherCacheError(f"{path}: missing; the cache build was interrupted, run it again to finish")
            data = load_file(str(path))
            lengths = data["lengths"].tolist()
            offsets = [0]
            for length in lengths[:-1]:
                offsets.append(offsets[-1] + length)
            for off, length in zip(offsets, lengths):
                self._ids.append(data["ids"][off : off + length].view(length, self.k))
                self._logprobs.append(data["logprobs"][off : off + length].view(length, self.k))

    def __len__(self) -> int:
        return len(self._ids)

    def check_matches(self, labels: list[list[int]], temperature: float) -> None:
        if len(labels) != len(self):
            raise TeacherCacheError(f"{self.dir}: cache has {len(self)} examples, the training set {len(labels)}")
        if labels_fingerprint(labels) != self.meta["labels_fingerprint"]:
            raise TeacherCacheError(f"{self.dir}: cache was built for other training targets")
        if abs(temperature - self.temperature) > 1e-9:
            raise TeacherCacheError(
                f"{self.dir}: cache was built at temperature {self.temperature}, run uses {temperature}"
            )

    def batch(self, indices: list[int], target_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, target_len, k) ids and log-probs for the examples ``indices``, zero-padded."""
        ids = torch.zeros(len(indices), target_len, self.k, dtype=torch.int64)
        logprobs = torch.zeros(len(indices), target_len, self.k, dtype=torch.float32)
        for row, i in enumerate(indices):
            n = self._ids[i].shape[0]
            ids[row, :n] = self._ids[i]
            logprobs[row, :n] = self._logprobs[i].float()
        return ids, logprobs


class CachedTeacherCollator:
    """Wraps a seq2seq collator: adds ``teacher_topk_ids``/``teacher_topk_logprobs`` from the cache."""

    def __init__(self, collator: Any, cache: TeacherCache) -> None:
        self.collator, self.cache = collator, cache

    def __call__(self, features: list[dict]) -> dict:
        if INDEX_COLUMN not in features[0]:  # evaluation batches: plain collation, live teacher
            return self.collator(features)
        indices = [f[INDEX_COLUMN] for f in features]
        batch = self.collator([{k: v for k, v in f.items() if k != INDEX_COLUMN} for f in features])
        ids, logprobs = self.cache.batch(indices, batch["labels"].shape[1])
        batch["teacher_topk_ids"], batch["teacher_topk_logprobs"] = ids, logprobs
        return batch
