"""Peak memory of one distillation step, planned from the shapes: nothing is loaded, nothing allocated.

The step is the kd method's: the teacher's forward (no grad; or its cached top-k log-probs with
``--teacher_cache``), the student's forward, ``alpha*T^2*KL + (1-alpha)*CE`` on every target position (the plan
assumes no padding: the worst case), backward, gradient clipping and an AdamW step, twice (the second step holds
the optimizer states). It runs on fake tensors (``torch._subclasses.FakeTensorMode``: shapes and dtypes only)
under PyTorch's ``MemTracker`` (``torch.distributed._tools.mem_tracker``), which counts every tensor the real step
would hold, by kind (parameters, gradients, optimizer states, activations, temporaries), at the peak.

Checked against the resident memory of the same step run for real (``tests/test_memory_plan.py``: within 15% at
the demo and flan-T5-small shapes). Per device with several processes: DDP holds everything on every device (the
per-device batch's activations); ZeRO-3/FSDP full sharding divides parameters, gradients and optimizer states by
the process count (the activations stay; the layer being gathered is not counted).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

GIB = 2**30
KINDS = ("teacher", "student", "gradients", "optimizer", "activations")


@dataclass
class StepShape:
    batch: int  # per device
    source_length: int
    target_length: int
    teacher_dtype: str = "float32"
    alpha: float = 0.5
    temperature: float = 2.0
    cache_topk: int | None = None  # train from a top-k teacher cache: no teacher in memory
    max_grad_norm: float = 1.0


def _bool_index(indices: Any) -> bool:
    return len(indices) == 1 and indices[0] is not None and indices[0].dtype == torch.bool


class AllTargetsValid(TorchDispatchMode):
    """Over fake tensors: a boolean mask selects every position (no padding, the worst case), where real tensors
    would give a data-dependent shape that fake tensors cannot know."""

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        aten = torch.ops.aten
        if func is aten.index.Tensor and _bool_index(args[1]):
            x, (mask,) = args
            return x.reshape(-1, *x.shape[mask.dim() :]).clone()
        if func in (aten.index_put.default, aten._index_put_impl_.default, aten.index_put_.default) and _bool_index(
            args[1]
        ):
            x, _, values = args[:3]
            x = x.clone() if func is aten.index_put.default else x
            return x.add_(values.reshape(x.shape))
        if func is aten.nonzero.default:
            return torch.empty((args[0].numel(), args[0].dim()), dtype=torch.long, device=args[0].device)
        return func(*args, **(kwargs or {}))


def _model(config: Any, dtype: str = "float32") -> Any:
    """The model built from its config in ``dtype``, with the weight sharing it has when loaded (flan-T5's own
    lm_head; embeddings shared between encoder and decoder). Under fake tensors transformers' tying does not take,
    so the sharing is read from a build on the meta device and applied again."""
    from transformers import AutoModelForSeq2SeqLM

    from llmdiet.compat import t5_as_in_4x

    def build() -> Any:  # in its dtype (fake tensors cannot be converted after), from a copy: t5_as_in_4x edits it
        return t5_as_in_4x(AutoModelForSeq2SeqLM.from_config(copy.deepcopy(config), dtype=getattr(torch, dtype)))

    with torch.device("meta"):
        reference = build()
    owner: dict[int, str] = {}
    shared: dict[str, str] = {}  # parameter name -> the name of the one it is
    for name, parameter in reference.named_parameters(remove_duplicate=False):
        shared[name] = owner.setdefault(id(parameter), name)
    model = build()
    for name, first in shared.items():
        if name != first:
            module, _, attribute = name.rpartition(".")
            setattr(model.get_submodule(module), attribute, model.get_parameter(first))
    return model


def distillation_step(teacher: Any, student: Any, optimizer: Any, batch: dict, shape: StepShape) -> None:
    """One kd step as the trainer takes it (teacher forward without grad, loss, backward, clip, AdamW)."""
    from llmdiet.distill.losses import distillation_loss, topk_distillation_loss

    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "decoder_input_ids")}
    logits = student(**inputs, use_cache=False).logits
    if shape.cache_topk:
        ids, logprobs = batch["teacher_topk_ids"], batch["teacher_topk_logprobs"]
        parts = topk_distillation_loss(logits, ids, logprobs, batch["labels"], shape.alpha, shape.temperature)
    elif teacher is not None:
        with torch.no_grad():
            teacher_logits = teacher(**inputs, use_cache=False).logits
        parts = distillation_loss(logits, teacher_logits, batch["labels"], shape.alpha, shape.temperature)
        del teacher_logits
    else:  # alpha 0: plain fine-tuning
        parts = distillation_loss(logits, logits.detach(), batch["labels"], 0.0, shape.temperature)
    parts.loss.backward()
    del logits, parts
    torch.nn.utils.clip_grad_norm_(student.parameters(), shape.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def step_batch(vocab: int, shape: StepShape) -> dict:
    b, s, t = shape.batch, shape.source_length, shape.target_length
    batch = {
        "input_ids": torch.randint(2, vocab, (b, s)),
        "attention_mask": torch.ones(b, s, dtype=torch.long),
        "decoder_input_ids": torch.randint(2, vocab, (b, t)),
        "labels": torch.randint(2, vocab, (b, t)),
    }
    if shape.cache_topk:
        batch["teacher_topk_ids"] = torch.randint(0, vocab, (b, t, shape.cache_topk), dtype=torch.int32)
        batch["teacher_topk_logprobs"] = torch.randn(b, t, shape.cache_topk).log_softmax(-1).half()
    return batch


def plan_step(teacher_config: Any, student_config: Any, shape: StepShape) -> dict:
    """The peak of two steps, in bytes by kind, from the configs alone."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.mem_tracker import MemTracker

    live_teacher = shape.alpha > 0 and not shape.cache_topk
    with FakeTensorMode():
        student = _model(student_config).train()
        teacher = _model(teacher_config, shape.teacher_dtype).eval() if live_teacher else None
        optimizer = torch.optim.AdamW(student.parameters(), lr=1e-5)
        batch = step_batch(student_config.vocab_size, shape)
        tracker = MemTracker()
        tracker.track_external(*[m for m in (teacher, student, optimizer) if m is not None])
        with tracker, AllTargetsValid():
            for _ in range(2):
                distillation_step(teacher, student, optimizer, batch, shape)
                tracker.reset_mod_stats()
        peak = tracker.get_tracker_snapshot("peak")
    by_kind = {str(getattr(k, "value", k)): v for k, v in next(iter(peak.values())).items()}
    teacher_bytes = _bytes(teacher_config, shape.teacher_dtype) if live_teacher else 0
    parameters = by_kind.get("Parameter", 0)
    return {
        "peak_bytes": int(by_kind.get("Total", sum(v for k, v in by_kind.items() if k != "Total"))),
        "teacher": teacher_bytes,
        "student": parameters - teacher_bytes,
        "gradients": by_kind.get("Gradient", 0),
        "optimizer": by_kind.get("Optstate", 0),
        "activations": by_kind.get("Activation", 0) + by_kind.get("Temp", 0) + by_kind.get("Other", 0),
        "buffers": by_kind.get("Buffer", 0),
    }


def _bytes(config: Any, dtype: str) -> int:
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        model = _model(config, dtype)
    return sum(p.numel() for p in model.parameters()) * torch.empty((), dtype=getattr(torch, dtype)).element_size()


def per_device(plan: dict, processes: int = 1, sharded: bool = False) -> int:
    """Bytes per device: DDP (``sharded=False``) holds everything on every device; ZeRO-3/FSDP full sharding
    divides the model states (teacher, student, gradients, optimizer) by the process count."""
    states = sum(plan[k] for k in ("teacher", "student", "gradients", "optimizer"))
    rest = plan["peak_bytes"] - states
    return int(rest + (states / processes if sharded else states))


def config_of(name: str) -> Any:
    """A model's config: a local directory or cached hub id through AutoConfig; offline, the flan-T5 names by their
    public shapes (llmdiet.shapes)."""
    from transformers import AutoConfig

    from llmdiet.modeling import resolve_model
    from llmdiet.shapes import FLAN_T5_SHAPES, PLANNED_FLAN_T5_SHAPES, flan_t5_config

    known = [*FLAN_T5_SHAPES, *PLANNED_FLAN_T5_SHAPES]
    path = resolve_model(name)
    short = path.rsplit("/", 1)[-1]
    try:  # a flan-T5 name: the hub cache's config, else the public shapes (no network needed)
        return AutoConfig.from_pretrained(path, local_files_only=short in known)
    except OSError:
        if short in known:
            return flan_t5_config(short, planned=True)
        from llmdiet.config import ConfigError

        raise ConfigError(
            f"--plan: no config for {name} (not a local model directory, not in the hub cache, and not a flan-T5 "
            f"name: {', '.join(known)})"
        ) from None


def plan_table(plan: dict, devices: list[tuple[str, int, float]]) -> str:
    """The plan by kind, then per device on each (label, processes, GiB per device) layout."""
    rows = [f"{'':<12} {'MiB':>10}"]
    rows += [f"{kind:<12} {plan[kind] / 2**20:>10,.1f}" for kind in KINDS]
    rows.append(f"{'peak':<12} {plan['peak_bytes'] / 2**20:>10,.1f}")
    for label, processes, gib in devices:
        for sharded in (False, True) if processes > 1 else (False,):
            need = per_device(plan, processes, sharded) / GIB
            how = ("ZeRO-3/FSDP" if sharded else "DDP") if processes > 1 else "one process"
            rows.append(f"{label} ({how}): {need:.2f} GiB per device, {'fits' if need <= gib else 'does not fit'}")
    return "\n".join(rows)


def measure_step(teacher_config: Any, student_config: Any, shape: StepShape) -> int:
    """The same two steps run for real: peak resident memory (VmHWM) minus the resident memory before the models exist.
    Run it in a fresh process with ``MALLOC_MMAP_THRESHOLD_=65536``, so that glibc returns every freed tensor to
    the system and the resident set follows the live tensors (the default threshold adapts upwards and keeps
    freed blocks: measured 29% above the live tensors at flan-T5-small shapes)."""
    import resource

    import psutil

    tiny = student_config.__class__(**{**student_config.to_dict(), "d_model": 8, "d_ff": 16, "d_kv": 4})
    tiny.num_layers = tiny.num_decoder_layers = tiny.num_heads = 1
    warm = _model(tiny).train()  # the kernels' one-off buffers go into the baseline
    distillation_step(
        warm, warm, torch.optim.AdamW(warm.parameters()), step_batch(tiny.vocab_size, _tiny(shape)), shape
    )
    del warm
    base, base_files = psutil.Process().memory_info().rss, _rss_files()
    live_teacher = shape.alpha > 0 and not shape.cache_topk
    student = _model(student_config).train()
    teacher = _model(teacher_config, shape.teacher_dtype).eval() if live_teacher else None
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-5)
    batch = step_batch(student_config.vocab_size, shape)
    for _ in range(2):
        distillation_step(teacher, student, optimizer, batch, shape)
    # VmHWM, this process image's own peak: getrusage's ru_maxrss survives exec, so a child started by a large
    # parent (a test runner) would report the parent's size
    peak = _status_bytes("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # tensors are anonymous memory: file-backed pages mapped since the baseline (a library loaded on first use)
    # stay mapped to the end and are not the step's
    return peak - base - max(0, _rss_files() - base_files)


def measured_peaks(reset: bool = True) -> dict:
    """What this process has used so far: its peak resident memory (VmHWM) and, on a GPU, the peak allocated by
    torch on the current device (then reset, when ``reset``, so the next phase is measured on its own). Written to
    training_log.json per phase (teacher cache build, training) beside the plan's numbers."""
    import torch

    out = {"cpu_peak_rss_bytes": _status_bytes("VmHWM") or None}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda_peak_allocated_bytes"] = int(torch.cuda.max_memory_allocated())
        out["cuda_peak_reserved_bytes"] = int(torch.cuda.max_memory_reserved())
        if reset:
            torch.cuda.reset_peak_memory_stats()
    return out


def _rss_files() -> int:
    """Resident file-backed memory of this process (``RssFile``; 0 where /proc is missing)."""
    return _status_bytes("RssFile")


def _status_bytes(key: str) -> int:
    """A ``KEY: N kB`` line of /proc/self/status in bytes (0 where there is none)."""
    try:
        for line in open("/proc/self/status", encoding="ascii"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _tiny(shape: StepShape) -> StepShape:
    return StepShape(1, 4, 4, shape.teacher_dtype, shape.alpha, shape.temperature, shape.cache_topk)


def print_plan(args: Any, data: Any, training: Any) -> None:
    """``llmdiet distill --plan``: the step these flags would train, planned, and where it fits."""
    from llmdiet.config import ConfigError

    if args.method != "kd":
        raise ConfigError(
            f"--plan models the kd step (teacher forward, student step); --method {args.method} is not modelled"
        )
    shape = StepShape(
        batch=training.per_device_train_batch_size,
        source_length=data.max_source_length,
        target_length=data.max_target_length,
        teacher_dtype=args.teacher_dtype,
        alpha=args.alpha,
        temperature=args.temperature,
        cache_topk=args.teacher_cache_topk if args.teacher_cache else None,
        max_grad_norm=training.max_grad_norm,
    )
    plan = plan_step(config_of(args.teacher_model), config_of(args.student_model), shape)
    teacher = (
        "top-k cache (no teacher in memory)" if shape.cache_topk else f"{args.teacher_model} ({shape.teacher_dtype})"
    )
    print(
        f"one training step of {args.student_model} from {teacher}: batch {shape.batch} per device, "
        f"{shape.source_length} source and {shape.target_length} target tokens (no padding: the worst case), AdamW"
    )
    gib = args.plan_gpu_gib
    print(plan_table(plan, [(f"1 x {gib:g} GiB", 1, gib), (f"8 x {gib:g} GiB", 8, gib)]))
