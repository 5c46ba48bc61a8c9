"""Fingerprints of everything that changes a cache's content, and the check that refuses a stale cache.

A cache (teacher top-k log-probs, teacher translations, sweep points, eval runs) stores the fingerprint
``parts`` it was built with; a later run recomputes them and :func:`check_parts` stops with one line naming
every part that changed and the flag that rebuilds. Model identity is the *content* (config + weight files +
tokenizer files, sha256), never the path: a retrained model at the same path is another model.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from llmdiet.config import ConfigError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".onnx", ".onnx_data")
TOKENIZER_FILES = (
    "tokenizer.json",
    "spiece.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "sentencepiece.bpe.model",
)

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
    """``{"config", "weights", "tokenizer"}`` content hashes of a local model directory; a hub id stands for
    itself (``{"hub_id": ...}``): its revision is whatever the hub cache resolved, recorded by provenance."""
    root = Path(name_or_path)
    identity: dict = {}
    if root.is_dir():
        weights = [
            p
            for p in root.rglob("*")
            if p.is_file()
            and p.name.endswith(WEIGHT_SUFFIXES)
            and not any(part.startswith("checkpoint-") for part in p.relative_to(root).parts)
        ]
        config = root / "config.json"
        identity = {
            "config": file_sha256(config)[:32] if config.is_file() else None,
            "weights": _files_sha256(root, weights),
        }
    else:
        identity = {"hub_id": str(name_or_path)}
    tok_root = Path(tokenizer) if tokenizer else root
    if tok_root.is_dir():
        identity["tokenizer"] = _files_sha256(
            tok_root, [tok_root / n for n in TOKENIZER_FILES if (tok_root / n).is_file()]
        )
    else:
        identity["tokenizer"] = {"hub_id": str(tokenizer or name_or_path)}
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
