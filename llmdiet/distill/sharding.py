"""Sharded launches: which engine ``accelerate launch`` asked for, whether this machine can serve it, and the frozen
teacher sharded the same way as the student.

The shipped configs are ``recipes/accelerate/{ddp,fsdp,deepspeed-zero3,deepspeed-zero3-offload}.yaml``. accelerate
prepares the student (the model the Trainer trains) for each of them, but a frozen model passed to
``prepare_model(..., evaluation_mode=True)`` is only moved to the device: under FSDP and ZeRO-3 every process would
hold the whole teacher, which is exactly what a sharded launch is for avoiding. :func:`prepare_frozen_teacher` shards
it as TRL does for its reference and teacher models (``trl.models.utils.prepare_fsdp`` / ``prepare_deepspeed``):

- FSDP2: ``fully_shard`` on every block of the model's ``_no_split_modules`` (T5Block, ...), then on the root, with
  the plugin's ``reshard_after_forward``, CPU offload and mixed-precision policies; each process keeps 1/N of the
  teacher and gathers one block at a time for the forward pass.
- FSDP1: the ``FullyShardedDataParallel`` wrapper with the plugin's settings.
- DeepSpeed: an inference engine from ``deepspeed.initialize`` with the launch's ZeRO config (stage 3 partitions the
  teacher; other stages keep it whole, stage 0).

accelerate runs FSDP and DeepSpeed only on accelerators. On a machine without one it would silently fall back to
plain data parallelism (every process holds everything) under an FSDP config, so :func:`check_launch` refuses such a
launch in one line before anything is loaded. ``tests/test_accelerate_configs.py`` runs ddp.yaml with two CPU
processes, checks the refusals, and shards the demo teacher with FSDP2 across two CPU processes (gloo: torch's FSDP2
runs on CPU, accelerate's launcher does not route to it), which gives the logits of the whole teacher with half the
parameters per process. ``bench/gpu_check.py`` runs the FSDP distillation step on GPUs.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from llmdiet.config import ConfigError

CONFIGS = {
    "fsdp": "recipes/accelerate/fsdp.yaml",
    "deepspeed": "recipes/accelerate/deepspeed-zero3.yaml (or deepspeed-zero3-offload.yaml)",
}


def _flag(name: str) -> bool:
    return os.environ.get(name, "false").lower() in ("1", "true", "yes")


def launch_engine() -> str:
    """The engine ``accelerate launch`` set up for this process: "fsdp", "deepspeed", "ddp" (several processes) or
    "single" (from the environment accelerate's launcher exports; nothing is initialised)."""
    if _flag("ACCELERATE_USE_FSDP"):
        return "fsdp"
    if _flag("ACCELERATE_USE_DEEPSPEED"):
        return "deepspeed"
    return "ddp" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else "single"


def has_accelerator() -> bool:
    import torch

    return bool(torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available()))


def check_launch(device: str = "auto") -> str:
    """Refuse, in one line, a sharded launch this machine cannot serve; returns the engine otherwise."""
    engine = launch_engine()
    if engine == "deepspeed" and importlib.util.find_spec("deepspeed") is None:
        raise ConfigError(
            f"{CONFIGS['deepspeed']}: DeepSpeed is not installed; pip install deepspeed (GPUs needed), or launch with "
            "recipes/accelerate/fsdp.yaml"
        )
    if engine in CONFIGS and (device == "cpu" or _flag("ACCELERATE_USE_CPU") or not has_accelerator()):
        raise ConfigError(
            f"{CONFIGS[engine]}: accelerate runs {engine.upper() if engine == 'fsdp' else 'DeepSpeed'} only on GPUs "
            "and this launch has none (it would train unsharded, every process holding both models); on CPU launch "
            "with --config_file recipes/accelerate/ddp.yaml, or plan GPUs with llmdiet distill --plan"
        )
    return engine


def shard_with_fsdp2(model: Any, mesh: Any = None, **policies: Any) -> Any:
    """``fully_shard`` each block named in the model's ``_no_split_modules``, then the root (so the embeddings and
    the head are sharded too). ``policies``: fully_shard's ``reshard_after_forward``, ``offload_policy``,
    ``mp_policy``."""
    from torch.distributed.fsdp import fully_shard

    block_names = set(getattr(model, "_no_split_modules", None) or [])
    for module in model.modules():
        if type(module).__name__ in block_names:
            fully_shard(module, mesh=mesh, **policies)
    fully_shard(model, mesh=mesh, **policies)
    return model


def prepare_frozen_teacher(teacher: Any, accelerator: Any) -> Any:
    """The frozen teacher, sharded like the launch shards the student (see the module docstring)."""
    teacher.eval().requires_grad_(False)
    if getattr(teacher, "hf_device_map", None):  # placed by --teacher_device_map: accelerate's hooks move its blocks
        return teacher
    state = accelerator.state
    if getattr(accelerator, "is_fsdp2", False):
        from torch.distributed.fsdp import MixedPrecisionPolicy, OffloadPolicy

        plugin = state.fsdp_plugin
        mesh = getattr(accelerator, "torch_device_mesh", None)
        if mesh is not None and accelerator.parallelism_config is not None:
            mesh = mesh[tuple(accelerator.parallelism_config.fsdp_dim_names)]
        return shard_with_fsdp2(
            teacher,
            mesh=mesh,
            reshard_after_forward=plugin.reshard_after_forward,
            offload_policy=plugin.cpu_offload or OffloadPolicy(),
            mp_policy=plugin.mixed_precision_policy or MixedPrecisionPolicy(),
        ).eval()
    if getattr(state, "fsdp_plugin", None) is not None and state.distributed_type.name == "FSDP":
        from torch.distributed.fsdp import FullyShardedDataParallel

        plugin = state.fsdp_plugin
        plugin.set_auto_wrap_policy(teacher)
        return FullyShardedDataParallel(
            teacher,
            sharding_strategy=plugin.sharding_strategy or plugin.reshard_after_forward,
            cpu_offload=plugin.cpu_offload,
            auto_wrap_policy=plugin.auto_wrap_policy,
            mixed_precision=plugin.mixed_precision_policy,
            device_id=accelerator.device,
        ).eval()
    if getattr(state, "deepspeed_plugin", None) is not None:
        import copy

        import deepspeed

        config = copy.deepcopy(state.deepspeed_plugin.deepspeed_config)
        zero = config["zero_optimization"]
        hidden = getattr(teacher.config, "hidden_size", None)  # T5: d_model
        if zero["stage"] != 3:
            zero["stage"] = 0  # below ZeRO-3 nothing partitions parameters: a whole copy
        elif hidden:  # the model-sized buckets the Trainer fills for the student only at train time ("auto")
            zero["reduce_bucket_size"] = hidden * hidden
            zero["stage3_param_persistence_threshold"] = 10 * hidden
            zero["stage3_prefetch_bucket_size"] = int(0.9 * hidden * hidden)
        config.pop("optimizer", None), config.pop("scheduler", None)
        engine, *_ = deepspeed.initialize(model=teacher, config=config)
        return engine.eval()
    return accelerator.prepare_model(teacher, evaluation_mode=True)
