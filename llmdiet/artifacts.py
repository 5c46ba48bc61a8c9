"""The on-disk format shared by every quantized artifact.

Each ``llmdiet quantize`` output directory holds the engine's own files, the tokenizer,
and ``llmdiet_artifact.json``::

    {"method": "dynamic-int8", "backend": "dynamic-int8", "source_model": "...",
     "parameters": 76961152, "disk_bytes": ..., "fp32_disk_bytes": ..., "size_ratio": ...,
     "created": "...", "provenance": {...}, ...method-specific keys}

``backend`` is the registered backend name that loads the directory, so
``llmdiet eval --backend auto`` (``llmdiet.engines.detect_backend``) finds the loader.

Tensors are stored with safetensors. safetensors refuses tensors that share memory
(T5 ties ``shared``, ``encoder.embed_tokens`` and ``decoder.embed_tokens``): :func:`save_tensors`
stores each storage once and records the aliases in the file's metadata, and
:func:`load_tensors` restores them.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from llmdiet.modeling import directory_bytes
from llmdiet.provenance import provenance

if TYPE_CHECKING:  # torch loads only when a tensor is read or written
    import torch

ARTIFACT_FILE = "llmdiet_artifact.json"
ALIASES_KEY = "llmdiet_aliases"


class BackendError(ValueError):
    """A user-facing problem with an artifact or the engine that runs it (bad path, unknown name, missing library)."""


def check_output_dir(out: str | Path, overwrite: bool) -> Path:
    """Refuse an ``out`` that cannot be (re)placed, before any work: a file, or a non-empty directory that is
    not an llmdiet artifact, or an artifact without ``overwrite``. (``--overwrite_output_dir`` never deletes a directory that
    ``llmdiet quantize`` did not write, e.g. ``--output_dir .``.)"""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BackendError(f"--output_dir {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not (out / ARTIFACT_FILE).is_file():
            raise BackendError(
                f"--output_dir {out}: not empty and not an llmdiet artifact (no {ARTIFACT_FILE}); "
                "refusing to replace it, choose another --output_dir"
            )
        if not overwrite:
            raise BackendError(
                f"--output_dir {out}: already holds an artifact (pass --overwrite_output_dir to replace it)"
            )
        foreign = foreign_files(out)
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise BackendError(
                f"--output_dir {out}: --overwrite_output_dir replaces only what llmdiet wrote, and the directory also "
                f"holds {shown}; move them out first (or choose another --output_dir)"
            )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BackendError(f"--output_dir {out}: cannot create its parent directory ({err.strerror})") from None
    if not os.access(out.parent, os.W_OK):
        raise BackendError(f"--output_dir {out}: {out.parent} is not writable; choose another --output_dir")
    return out


def foreign_files(out: Path) -> list[str]:
    """Files in an artifact directory that llmdiet did not write (not in its manifest, ``files`` in
    ``llmdiet_artifact.json``; artifacts from before the manifest: anything that is not a model file)."""
    from llmdiet.modeling import counted_files

    try:
        meta = json.loads((out / ARTIFACT_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        meta = {}
    written = set(meta.get("files") or counted_files(out)) | {ARTIFACT_FILE, "README.md", ".llmdiet.lock"}
    present = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    return [f for f in present if f not in written]


@contextlib.contextmanager
def temporary_files_under(directory: Path):
    """Every temporary file of this block (``tempfile`` and ``TMPDIR``, which ONNX Runtime's and optimum's
    exports use) goes under ``directory`` — inside the run's partial directory, so a killed run leaves nothing in
    /tmp, and the next run removes it with the partial directory."""
    import tempfile

    directory.mkdir(parents=True, exist_ok=True)
    old_dir, old_env = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir, os.environ["TMPDIR"] = str(directory), str(directory)
    try:
        yield directory
    finally:
        tempfile.tempdir = old_dir
        if old_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = old_env
        shutil.rmtree(directory, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start_partial_dir(out: Path) -> Path:
    """A fresh ``.NAME.partial-PID`` beside ``out``; leftovers of killed runs (dead pids) are removed first."""
    for stale in out.parent.glob(f".{out.name}.partial-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    return partial


def publish_partial_dir(partial: Path, out: Path) -> None:
    """Move the complete ``partial`` into place as ``out`` (replacing an earlier artifact or an empty directory)."""
    old = None
    if out.is_dir() and any(out.iterdir()):
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
    elif out.is_dir():
        out.rmdir()
    partial.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def fp32_disk_bytes(source_model: str | Path, config) -> int | None:
    """Size of the source checkpoint directory when it holds float32 weights, else None (hub id, bf16 files)."""
    stored = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    stored = str(stored).replace("torch.", "") if stored is not None else "float32"
    size = directory_bytes(source_model)
    return size if size and stored == "float32" else None


def write_artifact(
    out: str | Path,
    *,
    method: str,
    backend: str,
    source_model: str,
    parameters: int,
    fp32_bytes: int | None,
    seed: int | None = None,
    command: list[str] | None = None,
    **extra,
) -> dict:
    """Write ``llmdiet_artifact.json`` (size measured after every other file is in place) and return it."""
    out = Path(out)
    meta_path = out / ARTIFACT_FILE
    if meta_path.exists():
        meta_path.unlink()
    disk = directory_bytes(out)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    meta = {
        "method": method,
        "backend": backend,
        "source_model": str(source_model),
        "parameters": int(parameters),
        "disk_bytes": disk,
        "fp32_disk_bytes": fp32_bytes,
        "size_ratio": round(disk / fp32_bytes, 4) if fp32_bytes else None,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **extra,
        "files": files,  # the manifest: what --overwrite_output_dir may replace
        "provenance": provenance(seed=seed, command=command),
    }
    meta_path.write_text(json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8")
    return meta


def read_artifact(path: str | Path, expected_backend: str | None = None) -> dict:
    """The artifact description of ``path``; clear errors for a missing or mismatched artifact."""
    meta_path = Path(path) / ARTIFACT_FILE
    if not meta_path.is_file():
        raise BackendError(f"{path}: no {ARTIFACT_FILE}; not a directory written by `llmdiet quantize`")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise BackendError(f"{meta_path}: invalid JSON ({err})") from None
    for key in ("method", "backend"):
        if key not in meta:
            raise BackendError(f"{meta_path}: missing field '{key}'")
    if expected_backend and meta["backend"] != expected_backend:
        raise BackendError(
            f"{path} is a '{meta['backend']}' artifact and cannot be loaded with backend '{expected_backend}' "
            "(use --backend auto)"
        )
    return meta


def model_type_of(path: str | Path) -> str | None:
    """The ``model_type`` of a model directory, an llmdiet artifact (recorded at quantization) or a cached hub id;
    None when it cannot be told without loading."""
    path = Path(path)
    for name in (ARTIFACT_FILE, "config.json"):
        try:
            value = json.loads((path / name).read_text(encoding="utf-8")).get("model_type")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(value, str):
            return value
    if path.exists():
        return None
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(str(path)).model_type
    except Exception:  # offline and not cached, or not a model id: the caller decides
        return None


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """safetensors ``save_file`` that stores tensors sharing one storage once and records the aliases."""
    from safetensors.torch import save_file

    unique: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name, tensor in tensors.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.dtype)
        if tensor.numel() and key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        unique[name] = tensor.detach().contiguous()
    meta = dict(metadata or {})
    meta[ALIASES_KEY] = json.dumps(aliases)
    save_file(unique, str(path), metadata=meta)


_SAFETENSORS_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}


class TensorFile:
    """A :func:`save_tensors` file read one tensor at a time, with plain ``read()`` calls.

    ``safe_open`` memory-maps the file, and tensors taken from the mapping keep it resident (the whole file on top
    of the model: it doubled the peak memory of dynamic-int8 evaluation). Read into private buffers instead, the
    file's pages stay in the page cache, which is not the process's memory; and a loader that reads, converts and
    drops one tensor at a time (:func:`llmdiet.quantize.torch_dynamic.load_dynamic_int8`) never holds the whole
    file. Format: an 8-byte little-endian header length, a JSON header (dtype, shape, data_offsets per tensor,
    ``__metadata__``), then the data. Aliased names (:func:`save_tensors`) read their target's data.
    """

    def __init__(self, path: str | Path):
        import struct

        self.path = Path(path)
        if not self.path.is_file():
            raise BackendError(f"{self.path}: weights file not found")
        try:
            with open(self.path, "rb") as f:
                (header_len,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(header_len))
            self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
            self.aliases: dict[str, str] = json.loads(self.metadata.pop(ALIASES_KEY, "{}"))
            for info in header.values():  # every entry names a known dtype, a shape and its byte range
                if info["dtype"] not in _SAFETENSORS_DTYPES or len(info["data_offsets"]) != 2:
                    raise ValueError(f"bad header entry {info}")
                list(info["shape"])
            self._header, self._data_start = header, 8 + header_len
        except (ValueError, KeyError, struct.error, RuntimeError, TypeError) as err:
            raise self._unreadable(err) from None

    def _unreadable(self, err) -> BackendError:
        return BackendError(
            f"{self.path}: not a readable safetensors file (truncated or corrupted? {err}); "
            "re-create the artifact with llmdiet quantize --overwrite_output_dir"
        )

    def names(self) -> list[str]:
        """Stored names in file order, then the aliases."""
        return [*sorted(self._header, key=lambda n: self._header[n]["data_offsets"][0]), *self.aliases]

    def __contains__(self, name: str) -> bool:
        return name in self._header or name in self.aliases

    def read(self, name: str) -> torch.Tensor:
        import torch

        info = self._header.get(self.aliases.get(name, name))
        if info is None:
            raise self._unreadable(f"tensor '{name}' is missing")
        begin, end = info["data_offsets"]
        try:
            with open(self.path, "rb") as f:
                f.seek(self._data_start + begin)
                data = bytearray(f.read(end - begin))
            if len(data) != end - begin:
                raise ValueError(f"tensor '{name}' is cut short ({len(data)} of {end - begin} bytes)")
            dtype = getattr(torch, _SAFETENSORS_DTYPES[info["dtype"]])
            tensor = torch.frombuffer(data, dtype=dtype) if data else torch.empty(0, dtype=dtype)
            return tensor.reshape(info["shape"])
        except (ValueError, RuntimeError, TypeError) as err:
            raise self._unreadable(err) from None

    def read_all(self, names=None) -> dict[str, torch.Tensor]:
        """``{name: tensor}`` for ``names`` (default all); an alias is the same tensor object as its target."""
        wanted = self.names() if names is None else list(names)
        out: dict[str, torch.Tensor] = {}
        for name in sorted(wanted, key=lambda n: n in self.aliases):  # targets first
            target = self.aliases.get(name)
            out[name] = out[target] if target in out else self.read(name)
        return out


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors, metadata)`` from :func:`save_tensors`; aliased names point at the same tensor again."""
    file = TensorFile(path)
    return file.read_all(), file.metadata


def save_tokenizer_and_config(model_or_config, tokenizer, out: str | Path) -> None:
    """Save the HF config (and generation config) and the tokenizer next to the weights."""
    config = getattr(model_or_config, "config", model_or_config)
    config.save_pretrained(out)
    generation_config = getattr(model_or_config, "generation_config", None)
    if generation_config is not None:
        generation_config.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)


def check_no_meta_tensors(model: torch.nn.Module, path: str | Path) -> None:
    """After loading into a meta-device skeleton, every tensor must have been filled from the file."""
    missing = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.device.type == "meta"]
    if missing:
        raise BackendError(
            f"{path}: weights file lacks {len(missing)} tensors, e.g. {missing[:3]} (corrupt or wrong artifact)"
        )


# ----------------------------------------------------------------------------- helpers for the backends


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    names = (
        "tokenizer.json",
        "tokenizer_config.json",
        "spiece.model",
        "sentencepiece.bpe.model",
        "vocab.json",
        "source.spm",
    )
    if Path(path).is_dir() and not any((Path(path) / n).is_file() for n in names):
        raise BackendError(
            f"{path}: the artifact has no tokenizer files (tokenizer.json, spiece.model, ...); copy "
            "them from the model it was made from (AutoTokenizer.from_pretrained(MODEL)"
            f".save_pretrained('{path}')), or re-run llmdiet quantize"
        )
    try:
        return AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as err:
        raise BackendError(
            f"{path}: cannot load the tokenizer saved with the artifact: {str(err).splitlines()[0]}"
        ) from None


def parameters_from_artifact(meta: dict, path: str | Path) -> int:
    if "parameters" not in meta:
        raise BackendError(f"{Path(path) / ARTIFACT_FILE}: missing field 'parameters'")
    return int(meta["parameters"])


def trim_heap(collect: bool = True) -> None:
    """Hand memory freed by large transient copies back to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    ``collect=False`` skips the garbage collection first (it costs ~0.3 s with a large model alive; a loader that
    frees its tensors by reference counting does not need it)."""
    import ctypes
    import gc

    if collect:
        gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        pass
