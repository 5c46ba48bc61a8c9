"""A teacher placed across devices by accelerate (issue 32, part 1a): the teacher cache built with the demo teacher
forced to disk offload is identical to the in-memory build, and so is the training that reads it."""

from __future__ import annotations

import pytest
from safetensors.torch import load_file
from test_distill import parse, small_run_argv

from llmdiet import cli
from llmdiet.config import ConfigError
from llmdiet.distill.job import run
from llmdiet.distill.teacher_placement import parse_max_memory, placement_kwargs


def test_max_memory_pairs_become_accelerates_mapping_or_one_clear_line():
    assert parse_max_memory("0=20GiB, 1=20GiB,cpu=60GiB") == {0: "20GiB", 1: "20GiB", "cpu": "60GiB"}
    assert parse_max_memory("cpu=200KB") == {"cpu": "200KB"}
    assert parse_max_memory(None) is None
    with pytest.raises(ConfigError, match="'cpu:60GiB' is not DEVICE=SIZE"):
        parse_max_memory("cpu:60GiB")
    with pytest.raises(ConfigError, match="unknown device 'gpu0'"):
        parse_max_memory("gpu0=10GB")
    assert placement_kwargs(None, None, None) == {}


def test_placement_flags_without_a_cache_or_a_device_map_are_refused(demo_assets, tmp_path, capsys):
    argv = ["distill", "--preset", "demo", "--output_dir", str(tmp_path / "x")]
    assert cli.main([*argv, "--teacher_device_map", "auto"]) == 2
    assert "--teacher_device_map places the teacher to build --teacher_cache" in capsys.readouterr().err
    assert cli.main([*argv, "--teacher_max_memory", "cpu=1GB"]) == 2
    assert "need --teacher_device_map auto" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_disk_offloaded_teacher_builds_the_same_cache_and_the_same_training(demo_assets, tmp_path, caplog):
    runs, offload = {}, tmp_path / "offload"
    placed = ["--teacher_device_map", "auto", "--teacher_max_memory", "cpu=4MB"]
    placed += ["--teacher_offload_folder", str(offload)]
    for name, extra in (("memory", []), ("offloaded", placed)):
        cache = ["--teacher_cache", str(tmp_path / f"cache-{name}"), "--teacher_cache_topk", "8"]
        argv = small_run_argv(demo_assets, tmp_path / name, "--max_steps", "4", "--eval_rows", "0", *cache, *extra)
        with caplog.at_level("INFO", logger="llmdiet.distill.run"):
            runs[name] = run(*parse(argv))
    # accelerate split the teacher: some of its modules in memory, the rest on "disk" (read per forward pass);
    # where it cuts depends on accelerate's and transformers' size accounting (6/6 on transformers 5, 5/7 on 4.57)
    placement = runs["offloaded"]["teacher_placement"]
    assert set(placement) == {"cpu", "disk"} and min(placement.values()) >= 1, placement
    assert f"modules per device {placement}" in caplog.text
    assert runs["memory"]["teacher_placement"] is None
    for log in runs.values():  # each phase's measured peak, beside the plan's (training's is cumulative)
        peaks = log["peak_memory"]
        assert 0 < peaks["teacher_cache"]["cpu_peak_rss_bytes"] <= peaks["training"]["cpu_peak_rss_bytes"]
    memory = load_file(tmp_path / "cache-memory" / "shard-00000.safetensors")
    offloaded = load_file(tmp_path / "cache-offloaded" / "shard-00000.safetensors")
    assert memory.keys() == offloaded.keys()
    for key in memory:
        assert memory[key].equal(offloaded[key]), key  # same ids, same fp16 log-probs, bit for bit
    losses = {name: [e["loss"] for e in log["log_history"] if "loss" in e] for name, log in runs.items()}
    assert losses["offloaded"] == losses["memory"] and len(losses["memory"]) > 0
    assert not (tmp_path / "offloaded" / "teacher-offload").exists()  # an explicit folder: nothing under the run
