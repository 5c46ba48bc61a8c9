"""A teacher that does not fit on one device: placed by accelerate's big-model inference to build the teacher cache.

``--teacher_device_map auto --teacher_max_memory 0=20GiB,cpu=60GiB --teacher_offload_folder DIR`` loads the teacher
with ``from_pretrained(device_map=..., max_memory=..., offload_folder=...)``: accelerate fills the GPUs in order,
then the CPU, then writes the remaining layers to the offload folder and streams them in per forward pass. Only
the teacher cache needs such a teacher: the cache is built once (top-k log-probs per target token), and training
then reads the cache, so the student never shares a device with the whole teacher. The cache's content does not
depend on the placement (the same layers run the same kernels): ``tests/test_teacher_placement.py`` checks it is
identical to the in-memory build with the demo teacher forced to disk.

Live-teacher methods (gkd's on-policy targets, dml, hidden-state losses) cannot use a cache; they need a sharded
launch instead (an accelerate FSDP/DeepSpeed config), not this.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from llmdiet.config import ConfigError

DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
_SIZE = re.compile(r"^\d+(\.\d+)?\s*([KMGT]i?B|B)?$", re.IGNORECASE)


def parse_max_memory(text: str | None) -> dict[int | str, str] | None:
    """``"0=20GiB,cpu=60GiB"`` -> ``{0: "20GiB", "cpu": "60GiB"}`` (accelerate's ``max_memory``); one clear line
    naming the bad pair otherwise."""
    if not text:
        return None
    out: dict[int | str, str] = {}
    for pair in text.split(","):
        device, _, size = (part.strip() for part in pair.partition("="))
        if not device or not _SIZE.match(size):
            raise ConfigError(
                f"--teacher_max_memory: '{pair.strip()}' is not DEVICE=SIZE (e.g. 0=20GiB,cpu=60GiB; devices: GPU "
                "indices, cpu, mps)"
            )
        if device.isdigit():
            out[int(device)] = size
        elif device in ("cpu", "mps"):
            out[device] = size
        else:
            raise ConfigError(f"--teacher_max_memory: unknown device '{device}' (GPU indices 0, 1, ..., cpu or mps)")
    return out


def placement_kwargs(device_map: str | None, max_memory: str | None, offload_folder: str | None) -> dict[str, Any]:
    """The ``from_pretrained`` arguments that place the teacher (empty: the whole teacher on one device)."""
    if not device_map:
        return {}
    kwargs: dict[str, Any] = {"device_map": device_map}
    memory = parse_max_memory(max_memory)
    if memory is not None:
        kwargs["max_memory"] = memory
    if offload_folder:
        Path(offload_folder).mkdir(parents=True, exist_ok=True)
        kwargs["offload_folder"] = offload_folder
    return kwargs


def is_placed(model: Any) -> bool:
    """Whether accelerate dispatched ``model`` over devices (it must then not be moved with ``.to``)."""
    return bool(getattr(model, "hf_device_map", None))


def input_device(model: Any) -> Any:
    """Where a batch goes: the device of the model's first layers (accelerate's hooks move activations onward)."""
    import torch

    device_map = getattr(model, "hf_device_map", None)
    if not device_map:
        return next(model.parameters()).device
    first = next(iter(device_map.values()))
    if isinstance(first, int):
        return torch.device("cuda", first)
    return torch.device(first if first in ("cuda", "mps") or str(first).startswith("cuda") else "cpu")


def placement_summary(model: Any) -> dict[str, int]:
    """Modules per device of a placed model (logged and written to the training log)."""
    summary: dict[str, int] = {}
    for device in (getattr(model, "hf_device_map", None) or {}).values():
        summary[str(device)] = summary.get(str(device), 0) + 1
    return summary
