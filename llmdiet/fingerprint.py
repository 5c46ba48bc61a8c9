"""Fingerprints of everything that changes a cache's content, and the check that refuses a stale cache.

A cache (teacher top-k log-probs, teacher translations, sweep points, eval runs) stores the fingerprint
``parts`` it was built with; a later run recomputes them and :func:`check_parts` stops with one line naming
every part that changed and the flag that rebuilds. Model identity is the *content* of every file that decides
the model's outputs (config, generation config, weights, tokenizer files, sha256), never the path: a retrained
model at the same path is another model, and so is one whose generation config (e.g. its forced target language)
changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from llmdiet.config import ConfigError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".onnx", ".onnx_data")
# what a model directory may hold that does not change what the model outputs (everything else is hashed)
NEUTRAL_FILES = {
    "README.md",
    "training_log.json",
    "trainer_state.json",
    "training_args.bin",
    "loss_curve.png",
    "llmdiet_artifact.json",  # its provenance (date, command) changes on every run; the files it describes are hashed
    "teacher_translations.jsonl",
    "teacher_translations.jsonl.meta.json",
    "sweep_settings.json",
}
NEUTRAL_DIRS = ("checkpoint-", "runs", "eval", "stale", "locks", "shared")  # name prefixes of sub-folders skipped
TOKENIZER_DIR = "tokenizer"  # CTranslate2 artifacts keep the tokenizer in a sub-folder


def identity_files(root: Path) -> dict[str, list[Path]]:
    """The files of a model directory that decide its outputs, by part: ``config`` (config.json),
    ``generation`` (generation_config.json: forced BOS, lengths, beams), ``weights`` (any depth, checkpoints
    excluded) and ``tokenizer`` (every other top-level file, and ``tokenizer/``: vocabularies, SentencePiece models
    such as Marian's source.spm/target.spm, merges, special tokens). Logs, cards, plots and caches are not hashed."""
    parts: dict[str, list[Path]] = {"config": [], "generation": [], "weights": [], "tokenizer": []}
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if not path.is_file() or any(p.startswith(".") for p in rel.parts) or rel.name in NEUTRAL_FILES:
            continue
        if any(d.startswith(NEUTRAL_DIRS) for d in rel.parts[:-1]):
            continue
        if path.name.endswith(WEIGHT_SUFFIXES):
            parts["weights"].append(path)
        elif len(rel.parts) == 1 and rel.name == "config.json":
            parts["config"].append(path)
        elif len(rel.parts) == 1 and rel.name == "generation_config.json":
            parts["generation"].append(path)
        elif len(rel.parts) == 1 or rel.parts[0] == TOKENIZER_DIR:
            parts["tokenizer"].append(path)
    return parts


_FILE_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (memoised per process by path, size and modification time)."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_CACHE:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
        _FILE_CACHE[key] = digest.hexdigest()
    return _FILE_CACHE[key]


def _files_sha256(root: Path, names: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(names):
        digest.update(f"{path.relative_to(root)}\0{file_sha256(path)}\n".encode())
    return digest.hexdigest()[:32]


def model_identity(name_or_path: str, tokenizer: str | None = None) -> dict:
    """Content hashes of a local model directory, by part (:func:`identity_files`): ``config``, ``generation``,
    ``weights``, ``tokenizer``; a hub id stands for itself (``{"hub_id": ...}``): its revision is whatever the hub
    cache resolved, recorded by provenance. ``tokenizer``: a separate tokenizer directory, hashed whole."""
    root = Path(name_or_path)
    identity: dict = {}
    if root.is_dir():
        files = identity_files(root)
        identity = {
            "config": _files_sha256(root, files["config"]) if files["config"] else None,
            "generation": _files_sha256(root, files["generation"]) if files["generation"] else None,
            "weights": _files_sha256(root, files["weights"]),
            "tokenizer": _files_sha256(root, files["tokenizer"]),
        }
    else:
        identity = {"hub_id": str(name_or_path)}
    if tokenizer:
        tok_root = Path(tokenizer)
        identity["tokenizer"] = (
            _files_sha256(tok_root, [p for ps in identity_files(tok_root).values() for p in ps])
            if tok_root.is_dir()
            else {"hub_id": str(tokenizer)}
        )
    elif not root.is_dir():
        identity["tokenizer"] = {"hub_id": str(name_or_path)}
    return identity


def rows_sha256(pairs: Iterable[tuple[str, str]]) -> str:
    """Content hash of (source, target) rows, in order."""
    digest = hashlib.sha256()
    count = 0
    for source, target in pairs:
        digest.update(source.encode("utf-8") + b"\0" + target.encode("utf-8") + b"\n")
        count += 1
    return f"{count}:{digest.hexdigest()[:32]}"


def digest(parts: dict) -> str:
    """One short hash of JSON-serialisable ``parts`` (key order does not matter)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def differences(stored: dict, current: dict, prefix: str = "") -> list[str]:
    """Human-readable list of the keys whose values differ (nested dicts flattened with dots)."""
    out = []
    for key in sorted(set(stored) | set(current)):
        a, b = stored.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}" + (f" ({a!r} -> {b!r})" if len(repr(a)) + len(repr(b)) < 80 else ""))
    return out


def check_parts(stored: dict, current: dict, where: str | Path, rebuild: str, error: type = ConfigError) -> None:
    """Raise ``error`` (a ConfigError) unless the cache at ``where`` was built with the ``current`` parts."""
    changed = differences(stored, current)
    if changed:
        raise error(f"{where}: built with other inputs (changed: {', '.join(changed)}); {rebuild}")
