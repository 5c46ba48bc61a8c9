"""The shipped accelerate configs (recipes/accelerate/*.yaml): each loads in accelerate, DDP trains with two CPU
processes, FSDP/DeepSpeed launches this machine cannot serve are refused in one line before anything loads, and the
frozen teacher sharded with FSDP2 across two CPU processes (gloo) gives the whole teacher's logits and outputs while
each process holds half of its parameters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmdiet.config import ConfigError
from llmdiet.distill import sharding

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "recipes" / "accelerate"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def test_every_shipped_config_loads_in_accelerate_with_its_engine():
    from accelerate.commands.config.config_args import load_config_from_file

    loaded = {path.stem: load_config_from_file(str(path)) for path in sorted(CONFIGS.glob("*.yaml"))}
    assert set(loaded) == {"ddp", "fsdp", "deepspeed-zero3", "deepspeed-zero3-offload"}
    assert loaded["ddp"].distributed_type.value == "MULTI_GPU"
    assert loaded["fsdp"].distributed_type.value == "FSDP" and loaded["fsdp"].fsdp_config["fsdp_version"] == 2
    assert loaded["fsdp"].fsdp_config["fsdp_reshard_after_forward"] is True
    for name in ("deepspeed-zero3", "deepspeed-zero3-offload"):
        assert loaded[name].distributed_type.value == "DEEPSPEED"
        assert loaded[name].deepspeed_config["zero_stage"] == 3
    offload = loaded["deepspeed-zero3-offload"].deepspeed_config
    assert offload["offload_optimizer_device"] == "cpu" and offload["offload_param_device"] == "cpu"
    assert loaded["deepspeed-zero3"].deepspeed_config["offload_param_device"] == "none"


@pytest.fixture
def launched(monkeypatch):
    for name in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED", "ACCELERATE_USE_CPU", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_the_engine_comes_from_the_launch_and_unservable_launches_are_refused(launched):
    assert sharding.check_launch() == "single"
    launched.setenv("WORLD_SIZE", "2")
    assert sharding.check_launch() == "ddp"
    launched.setattr(sharding, "has_accelerator", lambda: False)
    launched.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(ConfigError, match=r"^recipes/accelerate/fsdp.yaml: accelerate runs FSDP only on GPUs.*ddp"):
        sharding.check_launch()
    launched.setattr(sharding, "has_accelerator", lambda: True)
    assert sharding.check_launch() == "fsdp"  # GPUs: served
    with pytest.raises(ConfigError, match="only on GPUs"):
        sharding.check_launch("cpu")  # --device cpu under an FSDP config: the same refusal
    launched.setenv("ACCELERATE_USE_CPU", "True")  # accelerate launch --cpu
    with pytest.raises(ConfigError, match="only on GPUs"):
        sharding.check_launch()
    launched.delenv("ACCELERATE_USE_FSDP")
    launched.delenv("ACCELERATE_USE_CPU")
    launched.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    launched.setattr(sharding.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match="DeepSpeed is not installed; pip install deepspeed"):
        sharding.check_launch()
    launched.setattr(sharding.importlib.util, "find_spec", lambda name: object())
    assert sharding.check_launch() == "deepspeed"
    launched.setattr(sharding, "has_accelerator", lambda: False)
    with pytest.raises(ConfigError, match="accelerate runs DeepSpeed only on GPUs"):
        sharding.check_launch()


def _launch(config: str, out: Path, demo_assets, *extra: str) -> subprocess.CompletedProcess:
    from test_distill import small_run_argv

    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / config)]
    cmd += [str(REPO / "recipes" / "distill.py")]
    cmd += small_run_argv(demo_assets, out, "--method", "gkd", "--lmbda", "1", "--gkd_max_new_tokens", "8", *extra)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=ENV)


@pytest.mark.slow
def test_ddp_config_trains_the_live_teacher_method_with_two_cpu_processes(demo_assets, tmp_path):
    proc = _launch("ddp.yaml", tmp_path / "ddp", demo_assets, "--max_steps", "4", "--per_device_train_batch_size", "8")
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = json.loads((tmp_path / "ddp" / "training_log.json").read_text())
    assert log["world_size"] == 2 and log["launch_engine"] == "ddp" and log["global_step"] == 4
    assert log["on_policy_batches"] == 4 and (tmp_path / "ddp" / "model.safetensors").exists()


@pytest.mark.slow
def test_fsdp_config_on_cpu_is_refused_once_before_anything_loads(demo_assets, tmp_path):
    proc = _launch("fsdp.yaml", tmp_path / "fsdp", demo_assets)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("llmdiet distill: error:")]
    assert errors == [
        "llmdiet distill: error: recipes/accelerate/fsdp.yaml: accelerate runs FSDP only on GPUs and this launch "
        "has none (it would train unsharded, every process holding both models); on CPU launch with --config_file "
        "recipes/accelerate/ddp.yaml, or plan GPUs with llmdiet distill --plan"
    ]  # rank 0 says it; rank 1 exits quietly
    assert not (tmp_path / "fsdp").exists()


SHARD_SCRIPT = """
import json, sys, torch, torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from llmdiet.distill.sharding import shard_with_fsdp2
from llmdiet.modeling import load_seq2seq

dist.init_process_group("gloo")
teacher_path, out = sys.argv[1], sys.argv[2]
ids = torch.tensor([[37, 5, 8, 91, 14, 1], [22, 64, 7, 1, 0, 0]])
mask = (torch.arange(6) < torch.tensor([[6], [4]])).long()
decoder = torch.tensor([[0, 12, 40, 7], [0, 9, 9, 3]])
teacher = load_seq2seq(teacher_path)[0].eval().requires_grad_(False)
whole = sum(p.numel() for p in teacher.parameters())
shard_with_fsdp2(teacher, mesh=init_device_mesh("cpu", (dist.get_world_size(),)))
local = sum(p.to_local().numel() for p in teacher.parameters())  # at rest: this process's shards
with torch.no_grad():
    logits = teacher(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder).logits
    greedy = teacher.generate(input_ids=ids, attention_mask=mask, max_new_tokens=10, do_sample=False)
torch.save({"logits": logits, "greedy": greedy, "local": local, "whole": whole}, f"{out}/rank{dist.get_rank()}.pt")
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_fsdp2_sharded_teacher_on_two_cpu_processes_gives_the_whole_teachers_outputs(demo_assets, tmp_path):
    import torch

    from llmdiet.modeling import load_seq2seq

    script = tmp_path / "shard.py"
    script.write_text(SHARD_SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script)]
    proc = subprocess.run(
        cmd + [str(demo_assets.teacher), str(tmp_path)], capture_output=True, text=True, timeout=300, env=ENV
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    teacher = load_seq2seq(str(demo_assets.teacher))[0].eval()
    ids = torch.tensor([[37, 5, 8, 91, 14, 1], [22, 64, 7, 1, 0, 0]])
    mask = (torch.arange(6) < torch.tensor([[6], [4]])).long()
    decoder = torch.tensor([[0, 12, 40, 7], [0, 9, 9, 3]])
    with torch.no_grad():
        logits = teacher(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder).logits
        greedy = teacher.generate(input_ids=ids, attention_mask=mask, max_new_tokens=10, do_sample=False)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        torch.testing.assert_close(got["logits"], logits, rtol=1e-5, atol=1e-5)
        assert torch.equal(got["greedy"], greedy)
        assert got["local"] * 2 == got["whole"]  # each process holds half the teacher


@pytest.mark.slow
def test_gpu_teachers_script_dry_run_builds_an_offloaded_cache_and_records_the_fsdp_refusal(tmp_path):
    """bench/gpu_teachers.py on CPU: the demo teacher on disk builds the cache and the student trains from it (peaks
    recorded from the run's training_log.json); the FSDP launch is refused in one line, and the file says so."""
    sys.path.insert(0, str(REPO))
    from bench.gpu_teachers import main as teachers_main

    out = tmp_path / "teachers.json"
    assert teachers_main(["--dry_run", "--work_dir", str(tmp_path / "work"), "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    cache = record["teacher_cache_offloaded"]
    assert cache["returncode"] == 0 and cache["teacher_placement"] == {"disk": 1}
    assert cache["peak_memory"]["teacher_cache"]["cpu_peak_rss_bytes"] > 0
    fsdp = record["fsdp_step"]
    assert (
        fsdp["returncode"] != 0
        and len(fsdp["errors"]) == 1
        and "accelerate runs FSDP only on GPUs" in fsdp["errors"][0]
    )
    assert "teacher" in fsdp["plan"] and "(bfloat16)" in fsdp["plan"]
