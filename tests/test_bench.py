"""Smoke tests of the benchmark runner (bench/) on the demo's toy model sizes.

They check that a run finishes, that the results JSON holds the numbers it promises and that they
are consistent with each other (token counts, ratios, sizes), that the Markdown renders them, and
that a missing library skips its rows with the reason. No timing thresholds: speed on a shared
2-core machine is not a property of the code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import report  # noqa: E402
from bench.run import main as bench_main  # noqa: E402

NEW_TOKENS = 40
BACKENDS = ["torch-fp32+generate", "torch-fp32", "dynamic-int8+generate", "dynamic-int8", "ct2-int8", "ct2-direct"]


def tiny_argv(root: Path, *extra: str) -> list[str]:
    return [
        "--quick",
        "--student_shape",
        "tiny-student",
        "--teacher_shape",
        "tiny-student",
        "--batch1_sentences",
        "2",
        "--batch16_sentences",
        "16",
        "--train_steps",
        "2",
        "--train_warmup_steps",
        "1",
        "--harness_sentences",
        "8",
        "--rounds",
        "3",
        "--work_dir",
        str(root / "work"),
        "--results_dir",
        str(root / "results"),
        "--markdown",
        str(root / "BENCHMARKS.md"),
        "--tag",
        "smoke",
        *extra,
    ]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    assert bench_main(tiny_argv(root, "--backends", *BACKENDS)) == 0
    results = json.loads((root / "results" / "smoke.json").read_text())
    return root, results, (root / "BENCHMARKS.md").read_text()


def rows_by_backend(results):
    return {row["backend"]: row for row in results["generation"]}


def test_generation_rows_hold_consistent_numbers(smoke_run):
    _, results, _ = smoke_run
    rows = rows_by_backend(results)
    assert sorted(rows) == sorted(BACKENDS)
    for name, row in rows.items():
        assert row["status"] == "ok", (name, row.get("reason"))
        assert not row.get("warnings"), row.get("warnings")
        assert [run["batch_size"] for run in row["runs"]] == [1, 16]
        for run in row["runs"]:
            # the fixed-length contract: every sentence generates exactly NEW_TOKENS tokens
            assert run["generated_tokens"] == run["num_sentences"] * NEW_TOKENS
            assert run["sentences_per_s"] == pytest.approx(run["num_sentences"] / run["wall_s"], rel=1e-6)
            assert run["tokens_per_s"] == pytest.approx(NEW_TOKENS * run["sentences_per_s"], rel=1e-6)
            assert run["num_batches"] == -(-run["num_sentences"] // run["batch_size"])
            assert len(run["batch_latencies_s"]) == run["num_batches"]
            assert 0 < run["latency_p50_s"] <= run["latency_p95_s"] <= max(run["batch_latencies_s"]) + 1e-9
            assert sum(run["batch_latencies_s"]) <= run["wall_s"] + 1e-6
            assert run["peak_rss_bytes"] >= row["rss_before_load_bytes"] > 0
        assert row["load_average"]["start"] and row["load_average"]["end"]
        contention = row["contention"]
        assert contention["job_cpu_s"] > 0 and 0 <= contention["other_share_of_cores"] <= 1
        if name != "ct2-direct":
            assert row["rss_after_load_bytes"] >= row["rss_before_load_bytes"]
            assert 0 <= row["mapped_model_files_rss_bytes"] <= row["rss_end_bytes"]
    for name, row in rows.items():  # time-to-first-token and per-token latency at batch 1, from every backend
        one = row["runs"][0]
        assert 0 < one["first_token_p50_s"] < one["latency_p50_s"], name
        assert 0 < one["per_token_latency_p50_s"] * (NEW_TOKENS - 1) < one["latency_p50_s"], name
    # the same artifact decoded by llmdiet's static cache and by generate: the row says which
    assert "static KV cache" in rows["dynamic-int8"]["describe"]["decoding"]
    assert rows["dynamic-int8+generate"]["describe"]["decoding"].startswith("transformers generate")
    assert rows["ct2-int8"]["describe"]["inter_threads"] >= 1
    for run in rows["ct2-direct"]["runs"]:  # CTranslate2's best thread layout: the fastest of those tried
        assert len(run["layouts"]) >= 2 and run["tokens_per_s"] == max(x["tokens_per_s"] for x in run["layouts"])
    for name in ("torch-fp32+generate", "dynamic-int8+generate", "dynamic-int8"):  # profiled teacher rows
        prof = rows[name]["profile"]
        assert prof["batch_size"] == 16 and 0 < prof["matmul_share_of_op_time"] <= 1
        assert prof["top_ops"] and sum(op["share"] for op in prof["top_ops"]) <= 1.001
    assert "profile" not in rows["ct2-int8"]
    fp32 = rows["torch-fp32"]["artifact_bytes"]
    # int8 artifacts are smaller than the fp32 checkpoint; ct2-direct times the same files as ct2-int8
    assert rows["dynamic-int8"]["artifact_bytes"] < fp32 and rows["ct2-int8"]["artifact_bytes"] < fp32
    assert rows["ct2-direct"]["artifact_bytes"] == rows["ct2-int8"]["artifact_bytes"]
    artifacts = results["artifacts"]["tiny-student"]
    assert artifacts["dynamic-int8"]["size_ratio"] == pytest.approx(
        artifacts["dynamic-int8"]["disk_bytes"] / artifacts["dynamic-int8"]["fp32_disk_bytes"], abs=1e-4
    )
    assert artifacts["ct2-int8"]["command"].startswith("llmdiet quantize --model")


def test_distillation_step_modes(smoke_run):
    _, results, _ = smoke_run
    d = results["distillation"]
    assert d["status"] == "ok", d.get("reason")
    assert (d["batch_size"], d["source_tokens"], d["target_tokens"]) == (8, 40, NEW_TOKENS)
    assert set(d["modes"]) == {"plain", "kd-live", "kd-cached"}
    plain = d["modes"]["plain"]["median_s"]
    for mode in d["modes"].values():
        assert len(mode["steps_s"]) == d["steps"] == 2
        assert 0 < mode["min_s"] <= mode["median_s"] <= mode["max_s"]
        assert mode["ratio_vs_plain"] == pytest.approx(mode["median_s"] / plain)
        assert mode["profile"] and all(op["self_cpu_ms"] >= 0 for op in mode["profile"])
    assert d["modes"]["plain"]["ratio_vs_plain"] == 1.0
    assert d["modes"]["kd-cached"]["cache_build_s"] > 0
    assert d["flush_denormal"] is True and 0 <= d["subnormal_softmax_share"] <= 1
    check = d["subnormal_check"]  # the same plain step without flush-to-zero, as evidence
    assert check["plain_median_s"] > 0 and len(check["steps_s"]) == 3
    assert check["ratio_vs_flushed_plain"] == pytest.approx(check["plain_median_s"] / plain)


def test_harness_overhead_modes(smoke_run):
    _, results, _ = smoke_run
    h = results["harness"]
    assert h["status"] == "ok", h.get("reason")
    loop = h["modes"]["one-at-a-time"]
    assert loop["num_sentences"] == 8 and loop["generated_tokens"] == 8 * NEW_TOKENS
    for mode in h["modes"].values():
        assert mode["generated_tokens"] == 8 * NEW_TOKENS
        assert mode["speedup_vs_loop"] == pytest.approx(mode["sentences_per_s"] / loop["sentences_per_s"])
    assert h["modes"]["batched-sorted"]["sorted_by"] == "tokens"
    assert h["modes"]["batched-unsorted"]["sorted_by"] == "none"
    assert 10 <= h["source_tokens"]["min"] < h["source_tokens"]["max"] <= 60


def test_results_carry_provenance_and_targets(smoke_run):
    _, results, _ = smoke_run
    prov = results["provenance"]
    assert prov["hardware"]["cpu"] and prov["libraries"]["torch"] and "git_sha" in prov
    assert results["mode"] == "quick" and results["device"] == "cpu"
    assert len(results["load_average"]["start"]) == 3 and len(results["load_average"]["end"]) == 3
    assert results["total_wall_s"] > 0 and results["command"].startswith("python bench/run.py --quick")
    by_name = {t["name"]: t for t in results["targets"]}
    # 1 speed (vs fp32 generate), 1 size, 6 from rounds, 1 engine-alone memory, cached/live KD, harness: the
    # comparisons with CTranslate2 and memory have one figure each, from the rounds (issue 33)
    assert len(by_name) == 12
    for t in results["targets"]:
        assert t["status"] in {"MET", "MISSED", "IN RANGE", "OUTSIDE", "UNDECIDED"}, t
    vs_ct2 = [t["name"] for t in results["targets"] if "CTranslate2" in t["name"]]
    assert len(vs_ct2) == 6 and all("interleaved rounds in 2 blocks" in name for name in vs_ct2)
    assert not any("peak RSS while evaluating" in t["name"] for t in results["targets"])
    speed = next(
        t for t in results["targets"] if "batch 16: fastest T5-safe llmdiet int8 backend vs torch fp32" in t["name"]
    )
    rows = rows_by_backend(results)
    best = rows["dynamic-int8"]["runs"][1]["tokens_per_s"]  # the only T5-safe llmdiet int8 backend of this run
    assert speed["measured"] == pytest.approx(best / rows["torch-fp32+generate"]["runs"][1]["tokens_per_s"])
    assert speed["status"] == ("MET" if speed["measured"] >= 4 else "MISSED")
    small = next(t for t in results["targets"] if "batch 1: fastest llmdiet path" in t["name"])
    ratios = results["rounds"][0]["by_batch"]["1"]["ratio_vs_ct2"]
    assert small["measured"] == pytest.approx(max(ratios[p]["median"] for p in ("dynamic-int8", "torch-fp32")))


def test_interleaved_rounds_pair_every_path_with_ctranslate2_and_decide_by_the_spread(smoke_run):
    _, results, _ = smoke_run
    (row,) = results["rounds"]
    # two blocks of 3 rounds, one right after the generation section and one at the end of the run
    assert row["status"] == "ok" and row["rounds"] == 6 and row["role"] == "student and teacher"
    early, late = row["blocks"]
    assert early["rounds"] == late["rounds"] == 3 and early["run_minute"] < late["run_minute"]
    assert row["ct2_process_imported_torch"] is False  # CTranslate2 is timed in a process of its own, without torch
    batch1, batch16 = row["by_batch"]["1"], row["by_batch"]["16"]
    assert set(batch16["tokens_per_s"]) == {"ct2-direct", "dynamic-int8", "dynamic-int8+draft@0.7"}
    for block in (early, late):  # the merged spread holds every round of both blocks
        for path, ratio in block["ratio_vs_ct2"]["16"].items():
            assert set(ratio["values"]) <= set(batch16["ratio_vs_ct2"][path]["values"])
    # the later block re-measures the paths the targets rest on; the other acceptance rates are the first block's
    for path, rounds in (("dynamic-int8+draft", 3), ("dynamic-int8+draft@0.6", 3), ("dynamic-int8+draft@0.9", 3)):
        assert len(batch1["tokens_per_s"][path]["values"]) == rounds
    for path in ("dynamic-int8+draft@0.7", "torch-fp32", "dynamic-int8"):
        tps, ratio = batch1["tokens_per_s"][path], batch1["ratio_vs_ct2"][path]
        assert len(tps["values"]) == 6 and tps["min"] <= tps["median"] <= tps["max"]
        ct2 = batch1["tokens_per_s"]["ct2-direct"]["values"]
        assert ratio["values"] == pytest.approx([v / c for v, c in zip(tps["values"], ct2)])  # paired per round
    natural = row["by_batch"]["16-natural"]
    assert set(natural["tokens_per_s"]) == {"ct2-direct", "dynamic-int8", "dynamic-int8+drop"}
    assert set(natural["ratio_vs_ct2"]) == {"dynamic-int8", "dynamic-int8+drop"}
    lengths = row["natural_workload"]
    from bench.workload import natural_lengths

    assert (lengths["source_tokens"], lengths["output_tokens"]) == natural_lengths(16)  # seeded: the same every run
    assert len(set(lengths["output_tokens"])) > 8 and min(lengths["output_tokens"]) >= 6  # ragged, as real batches
    target = next(t for t in results["targets"] if "natural lengths" in t["name"])
    best = max(natural["ratio_vs_ct2"].values(), key=lambda r: r["median"])
    assert target["measured"] == pytest.approx(best["median"])
    # the draft is the teacher's own artifact here: it mostly agrees; the oracle rows' acceptance follows a (below it:
    # a run of proposals ends at the first wrong one)
    accept = row["acceptance_rate"]
    assert accept["dynamic-int8+draft"]["median"] > 0.5  # the same artifact: it agrees (per-row int8 scales)
    assert accept["dynamic-int8+draft@0.6"]["median"] < accept["dynamic-int8+draft@0.9"]["median"] < 0.95
    from bench.rounds import verdict

    spec = next(t for t in results["targets"] if "batch 1: speculative decoding" in t["name"])
    values = batch1["ratio_vs_ct2"]["dynamic-int8+draft@0.7"]["values"]
    assert spec["status"] == verdict(values, 3.0).upper() and "block 2" in spec["measured_text"]
    batched = next(t for t in results["targets"] if "batch 16: speculative decoding" in t["name"])
    assert batched["status"] == verdict(batch16["ratio_vs_ct2"]["dynamic-int8+draft@0.7"]["values"], 1.5).upper()
    assert verdict([1.6, 1.7], 1.5) == "met" and verdict([1.4, 1.6], 1.5) == "undecided"
    assert verdict([1.2, 1.4], 1.5) == "missed"


def test_memory_of_each_engine_alone_in_a_fresh_process(smoke_run):
    _, results, markdown = smoke_run
    (row,) = results["rounds"]
    mem = {m["engine"]: m for m in row["memory"]}
    assert set(mem) == {"ct2", "dynamic-int8"}
    assert mem["ct2"]["torch_imported"] is False and mem["ct2"]["transformers_imported"] is False
    assert mem["dynamic-int8"]["torch_imported"] is True
    assert mem["ct2"]["runtime_rss_bytes"] < mem["dynamic-int8"]["runtime_rss_bytes"]  # no torch in CTranslate2's
    for m in mem.values():
        assert m["batch"] == 16 and m["runtime_rss_bytes"] < m["rss_after_load_bytes"] <= m["lifetime_peak_rss_bytes"]
        peak = max(m["generation_peak_rss_bytes"], m["load_peak_rss_bytes"])
        assert m["peak_minus_runtime_bytes"] == peak - m["runtime_rss_bytes"]
    dyn = mem["dynamic-int8"]
    config = json.loads((Path(results["random_models"]["tiny-student"]["dir"]) / "config.json").read_text())
    per_position = config["num_decoder_layers"] * 2 * 16 * config["num_heads"] * config["d_kv"] * 4  # fp32 K and V
    assert dyn["expected_bytes"]["self_attention_kv"] == per_position * 40
    assert dyn["expected_bytes"]["cross_attention_kv"] == per_position * dyn["source_tokens"] > 0
    assert dyn["expected_bytes"]["step_logits_fp32"] == 16 * config["vocab_size"] * 4
    target = next(t for t in results["targets"] if "peak RSS minus the bare runtime" in t["name"])
    assert target["measured"] == pytest.approx(dyn["peak_minus_runtime_bytes"] / dyn["artifact_bytes"])
    assert target["status"] == ("MET" if target["measured"] <= 1.2 else "MISSED")
    assert "**Each engine alone**" in markdown and "is not explained by them" in markdown


def test_markdown_renders_every_section(smoke_run):
    root, results, markdown = smoke_run
    for heading in (
        "## Machine and run",
        "## Targets",
        "## Generation on CPU",
        "### Paired comparisons in interleaved rounds",
        "### Artifacts",
        "## Distillation step",
        "## Eval-harness overhead",
        "## GPU (H100 / H200)",
    ):
        assert heading in markdown
    for backend in BACKENDS:
        assert f"| `{backend}` | 1 | 2 |" in markdown and f"| `{backend}` | 16 | 16 |" in markdown
    assert "pending a lent GPU machine" in markdown
    assert results["provenance"]["hardware"]["cpu"] in markdown
    for target in results["targets"]:
        assert target["name"] in markdown
    # re-rendering from the JSON alone gives the same document
    again = root / "again.md"
    assert report.main([str(root / "results" / "smoke.json"), "--out", str(again)]) == 0
    assert again.read_text() == markdown
    # a second results file of the same mode and machine shows up as the run-to-run spread
    repeat = root / "repeat.json"
    repeat.write_text(json.dumps({**results, "started": "2000-01-01T00:00:00+00:00", "repeat_of": "smoke.json"}))
    with_repeat = report.write_markdown(
        root / "results" / "smoke.json", root / "with_repeat.md", others=[repeat]
    ).read_text()
    assert "Run-to-run spread" in with_repeat and "`repeat.json` (2000-01-01T00:00)" in with_repeat
    assert "Run-to-run spread" not in markdown
    # rendering from the repeat shows the run it repeats, not itself
    from_repeat = report.write_markdown(repeat, root / "from_repeat.md", others=[root / "results" / "smoke.json"])
    assert from_repeat.read_text() == with_repeat


def test_missing_library_skips_its_rows(tmp_path, monkeypatch):
    """With CTranslate2 hidden from the worker processes, its rows are skipped with the reason; the run finishes."""
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['ctranslate2'] = None  # simulate: not installed\n")
    monkeypatch.setenv("PYTHONPATH", str(hide))
    argv = tiny_argv(tmp_path, "--sections", "generation", "--backends", "ct2-int8", "ct2-direct")
    assert bench_main(argv) == 0
    results = json.loads((tmp_path / "results" / "smoke.json").read_text())
    rows = rows_by_backend(results)
    for name in ("ct2-int8", "ct2-direct"):
        assert rows[name]["status"] == "skipped"
        assert "ctranslate2" in rows[name]["reason"]
    markdown = (tmp_path / "BENCHMARKS.md").read_text()
    assert "`ct2-int8`: not measured" in markdown and "`ct2-direct`: not measured" in markdown


def test_bad_arguments_are_clear_errors(tmp_path, capsys):
    assert bench_main(["--backends", "tensorrt", "--work_dir", str(tmp_path)]) == 2
    assert "--backends: unknown ['tensorrt']" in capsys.readouterr().err
    assert bench_main(["--student_shape", "flan-t5-xxl", "--work_dir", str(tmp_path)]) == 2
    assert "unknown shape 'flan-t5-xxl'" in capsys.readouterr().err


def test_cuda_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the error path cannot occur")
    assert bench_main(["--device", "cuda", "--work_dir", str(tmp_path), "--results_dir", str(tmp_path)]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.json"))  # no results file that would pass for GPU figures


def _fake_results(
    generate_tps, int8_tps, direct_tps, dyn_ratio, dyn_peak, dyn_bytes, plain, cached, live, speedup, onnx_tps=None
):
    """Batch-16 and batch-1 rows of the teacher shape (batch 1 at a tenth of the batch-16 rates), plus the student."""

    def gen(backend, tps, peak=1, size=1, shape="flan-t5-large"):
        return {
            "shape": shape,
            "role": "teacher",
            "backend": backend,
            "status": "ok",
            "artifact_bytes": size,
            "runs": [
                {"batch_size": 1, "tokens_per_s": tps / 10, "peak_rss_bytes": peak},
                {"batch_size": 16, "tokens_per_s": tps, "peak_rss_bytes": peak},
            ],
        }

    generation = [
        gen("torch-fp32+generate", generate_tps),
        gen("ct2-int8", 1000),
        gen("ct2-direct", direct_tps),
        gen("dynamic-int8", int8_tps, dyn_peak, dyn_bytes),
        gen("torch-fp32", 2 * direct_tps, shape="flan-t5-small"),
        gen("ct2-direct", direct_tps, shape="flan-t5-small"),
    ]
    if onnx_tps:
        generation.append(gen("onnx-static-int8", onnx_tps))
    return {
        "device": "cpu",
        "settings": {"teacher_shape": "flan-t5-large", "student_shape": "flan-t5-small"},
        "generation": generation,
        "artifacts": {
            "flan-t5-large": {
                "dynamic-int8": {
                    "size_ratio": dyn_ratio,
                    "disk_bytes": dyn_bytes,
                    "fp32_disk_bytes": dyn_bytes / dyn_ratio,
                }
            }
        },
        "distillation": {
            "status": "ok",
            "modes": {
                "plain": {"ratio_vs_plain": 1.0},
                "kd-cached": {"ratio_vs_plain": cached / plain},
                "kd-live": {"ratio_vs_plain": live / plain},
            },
        },
        "harness": {"status": "ok", "modes": {"batched-sorted": {"speedup_vs_loop": speedup}}},
    }


def test_target_verdicts_follow_the_numbers():
    # ct2-int8 runs at 1000 tokens/s, but it is CTranslate2 itself: never the "llmdiet int8 backend" compared with it
    good = report.evaluate_targets(_fake_results(10, 50, 30, 0.28, 1.2e9, 1e9, 1.0, 1.2, 4.0, 6.0))
    assert [t["status"] for t in good] == ["MET"] * 7 + ["MET", "IN RANGE", "MET"]
    assert good[0]["measured"] == pytest.approx(50 / 30) and good[1]["measured"] == pytest.approx(5.0)
    assert good[2]["measured"] == pytest.approx(50 / 30) and good[4]["measured"] == pytest.approx(2.0)
    assert "dynamic-int8 / ct2-direct" in good[0]["measured_text"]
    bad = report.evaluate_targets(_fake_results(10, 25, 30, 0.41, 2e9, 1e9, 1.0, 1.5, 6.0, 3.0))
    assert [t["status"] for t in bad] == [
        "MISSED",
        "MISSED",
        "MISSED",
        "MISSED",
        "MET",
        "MISSED",
        "MISSED",
        "MISSED",
        "OUTSIDE",
        "MISSED",
    ]
    assert bad[6]["measured"] == pytest.approx(2.0)
    # the fastest T5-safe backend counts for the "fastest" targets; the dynamic-int8 target stays dynamic-int8's
    onnx = report.evaluate_targets(_fake_results(10, 25, 30, 0.28, 1e9, 1e9, 1.0, 1.0, 4.0, 6.0, onnx_tps=60))
    assert onnx[0]["status"] == "MET" and "onnx-static-int8" in onnx[0]["measured_text"]
    assert onnx[2]["status"] == "MISSED" and onnx[2]["measured"] == pytest.approx(25 / 30)
    # a baseline that did not run gives NOT RUN with its reason, not a verdict
    results = _fake_results(10, 35, 34, 0.28, 1e9, 1e9, 1.0, 1.0, 4.0, 6.0)
    results["generation"][0] = {
        "shape": "flan-t5-large",
        "backend": "torch-fp32+generate",
        "status": "skipped",
        "reason": "timed out after 1800 s",
    }
    second = report.evaluate_targets(results)[1]
    assert second["status"] == "NOT RUN" and "timed out" in second["reason"]


def test_round_blocks_merge_so_a_target_needs_every_block_to_clear_its_line():
    from bench.rounds import merge_blocks, spread

    def block(index, minute, ratios, memory=None):
        ct2 = [100.0] * len(ratios)
        by_batch = {
            "16": {
                "sentences": 16,
                "tokens_per_s": {"ct2-direct": spread(ct2), "dynamic-int8": spread([100.0 * r for r in ratios])},
                "ratio_vs_ct2": {"dynamic-int8": spread(ratios)},
            }
        }
        row = {"shape": "flan-t5-large", "role": "teacher", "status": "ok", "rounds": len(ratios), "cores": 2}
        row.update(block=index, run_minute=minute, by_batch=by_batch, timed_s=10.0, acceptance_rate={})
        return [{**row, **({"memory": memory} if memory else {})}]

    # the early block clears 1.25x in every round, the late one (a slower machine) does not: undecided, not met
    (row,) = merge_blocks([block(0, 7.0, [1.3, 1.4, 1.35], memory=[{"engine": "x"}]), block(1, 19.0, [1.2, 1.3, 1.26])])
    assert row["rounds"] == 6 and row["timed_s"] == 20.0 and row["memory"] == [{"engine": "x"}]
    assert row["by_batch"]["16"]["ratio_vs_ct2"]["dynamic-int8"]["values"] == [1.3, 1.4, 1.35, 1.2, 1.3, 1.26]
    assert [b["run_minute"] for b in row["blocks"]] == [7.0, 19.0]
    results = {"rounds": [row]}
    (target,) = [t for t in report.round_targets(results) if "batch 16: dynamic-int8" in t["name"]]
    assert target["status"] == "UNDECIDED" and target["measured"] == pytest.approx(1.3)
    assert "block 1 (minute 7) 1.30-1.40; block 2 (minute 19) 1.20-1.30" in target["measured_text"]
    (row,) = merge_blocks([block(0, 7.0, [1.3, 1.4, 1.35]), block(1, 19.0, [1.26, 1.3, 1.27])])
    (target,) = [t for t in report.round_targets({"rounds": [row]}) if "batch 16: dynamic-int8" in t["name"]]
    assert target["status"] == "MET"
    # a block that failed is named, and the verdict rests on the block that ran
    failed = [{"shape": "flan-t5-large", "block": 1, "status": "skipped", "reason": "timed out"}]
    (row,) = merge_blocks([block(0, 7.0, [1.3, 1.4, 1.35]), failed])
    assert row["rounds"] == 3 and row["blocks"][1] == {
        "block": 1,
        "started": None,
        "run_minute": None,
        "status": "skipped",
        "reason": "timed out",
    }
    assert "block 2: timed out" in report.rounds_section({"rounds": [row]})


def test_notes_written_for_another_run_carry_a_warning(tmp_path, monkeypatch):
    notes = tmp_path / "notes.md"
    notes.write_text("## Notes\n<!-- notes-for: bench/results/a.json -->\nThe teacher misses 3x because ...\n")
    monkeypatch.setattr(report, "NOTES_FILE", notes)
    same = report.notes_text("bench/results/a.json")
    assert "written for" not in same and "misses 3x" in same
    other = report.notes_text("bench/results/b.json")
    assert other.startswith("## Notes\n\n> **These notes were written for `bench/results/a.json`")
    assert "`bench/results/b.json`" in other and "misses 3x" in other


# ----------------------------------------------------------------------------- pruned shapes (issue 30)


def test_pruned_ratios_are_taken_inside_each_round_and_decided_by_the_spread():
    from bench.pruned_shapes import _round_ratios

    values = {
        "dynamic-int8": {"values": [100.0, 50.0, 80.0]},
        "dynamic-int8:width": {"values": [150.0, 60.0, 100.0]},  # per round: 1.5, 1.2, 1.25
        "torch-fp32": {"values": [10.0, 10.0, 10.0]},
        "torch-fp32:magnitude-50": {"values": [9.0, 11.0, 10.0]},
    }
    width = _round_ratios(values, "dynamic-int8:width", "dynamic-int8")
    assert (width["median"], width["min"], width["max"]) == (1.25, 1.2, 1.5)
    assert width["verdict"] == "faster"  # even the slowest round is faster
    assert _round_ratios(values, "torch-fp32:magnitude-50", "torch-fp32")["verdict"] == "within noise"
    slower = {"a": {"values": [10.0, 10.0, 10.0]}, "a:x": {"values": [9.0, 8.0, 9.9]}}
    assert _round_ratios(slower, "a:x", "a")["verdict"] == "slower"
    one = {"a": {"values": [10.0]}, "a:x": {"values": [20.0]}}
    assert _round_ratios(one, "a:x", "a")["verdict"].startswith("no verdict")


def _pruned_record(csr_vs_dense: float, width_verdict: str) -> dict:
    entry = {"zeros": 0.5, "dense_storage_ms": 1.0, "csr_ms": 1.0 / csr_vs_dense, "csr_vs_dense": csr_vs_dense}
    return {
        "shape": "flan-t5-large",
        "provenance": {"command": "python bench/pruned_shapes.py", "date": "2026-12-07T00:00", "git_sha": "abcdef1",
                       "hardware": {"cpu": "CPU X", "cpu_count": 2}},
        "cpu_flags": ["avx2"],
        "unpruned": {"parameters": 783_150_080, "disk_bytes": 3_132_600_000},
        "pruned": {
            "width": {"parameters": [783_150_080, 500_034_304], "dense_bytes": 2_000_210_000, "d_ff": [2816, 1408],
                      "num_heads": [16, 12]},
            "magnitude-50": {"parameters": [783_150_080, 783_150_080], "dense_bytes": 3_132_600_000,
                             "sparse_bytes": 2_000_000_000, "zeros": 0.5},
        },
        "artifacts": {"dynamic-int8": {"disk_bytes": 882_500_000}, "dynamic-int8:width": {"disk_bytes": 600_000_000}},
        "rounds": {"rounds": 3},
        "pruned_vs_unpruned": {
            "dynamic-int8:width vs dynamic-int8, batch 16": {"median": 1.3, "min": 1.2, "max": 1.4,
                                                             "verdict": width_verdict},
            "torch-fp32:magnitude-50 vs torch-fp32, batch 16": {"median": 1.0, "min": 0.97, "max": 1.02,
                                                                 "verdict": "within noise"},
        },
        "sparse_kernels": {"matrix": "wi_0 [2816, 1024]", "repeats": 20, "rows": {"640": {
            "dense_ms": 1.0, "50% unstructured": entry, "2:4": entry, "semi_structured": "RuntimeError: CUDA only"}}},
    }  # fmt: skip


def test_pruned_section_reads_every_number_from_the_record():
    text = report.pruned_section(_pruned_record(0.4, "faster"), "bench/results/pruned-shapes-flan-t5-large.json")
    assert "| width-pruned | 1408 | 12 | 500,034,304 | 2,000.2 | 600.0 | - |" in text
    assert "| flan-t5-large (unpruned) | 2816 | 16 | 783,150,080 | 3,132.6 | 882.5 | - |" in text
    assert "1.30x [1.20, 1.40] | faster" in text
    assert "CSR runs at best 0.40x the dense time (slower)" in text
    assert "50%-zero model against the unpruned one: within noise" in text
    assert "1 of the width-pruned comparisons decided faster" in text
    # the conclusion follows the numbers, not a fixed sentence
    other = report.pruned_section(_pruned_record(1.5, "within noise"), "x.json")
    assert "(slower)" not in other and "No width-pruned comparison was decided faster" in other


@pytest.mark.slow
def test_pruned_shapes_runs_end_to_end_on_a_tiny_shape(tmp_path):
    from bench.pruned_shapes import main as pruned_main

    out = tmp_path / "pruned.json"
    argv = ["--shape", "tiny-teacher", "--rounds", "1", "--matmul_repeats", "2", "--work_dir", str(tmp_path / "w")]
    assert pruned_main([*argv, "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    width = data["pruned"]["width"]
    assert width["d_ff"][1] == width["d_ff"][0] // 2 and width["num_heads"][1] < width["num_heads"][0]
    assert width["parameters"][1] < width["parameters"][0]
    assert abs(data["pruned"]["magnitude-50"]["zeros"] - 0.5) <= 0.005
    assert data["artifacts"]["ct2-direct:width"]["disk_bytes"] < data["artifacts"]["ct2-direct"]["disk_bytes"]
    assert set(data["rounds"]["by_batch"]["16"]["tokens_per_s"]) >= {"torch-fp32:magnitude-50", "ct2-direct:width"}
    assert "CUDA" in data["sparse_kernels"]["rows"]["1"]["semi_structured"]  # the CPU has no 2:4 kernels
    assert "pruned-shapes" not in report.pruned_section(data, "x.json")  # renders


@pytest.mark.slow
def test_gpu_script_dry_run_covers_2_4_semi_structured(tmp_path):
    from bench.gpu import main as gpu_main

    out = tmp_path / "gpu.json"
    assert gpu_main(["--dry_run", "--new_tokens", "4", "--source_tokens", "8", "--out", str(out)]) == 0
    semi = json.loads(out.read_text())["semi_structured_2_4"]
    assert semi["pattern"] == "2:4 by |w|" and len(semi["dense_kernels"]) == 2
    assert semi["sparse_kernels"].startswith("not run")  # CPU: recorded, not faked


def test_per_row_int8_section_in_benchmarks_is_the_committed_results_file():
    """BENCHMARKS.md's per-row table is rendered from bench/results/per-row-int8.json, and that file shows what the
    scheme is for: every row identical to its sentence alone at batch 16 with per-row scales."""
    root = Path(__file__).resolve().parents[1]
    data = json.loads((root / "bench" / "results" / "per-row-int8.json").read_text())
    section = report.per_row_int8_section(data, "bench/results/per-row-int8.json")
    assert section.strip() in (root / "BENCHMARKS.md").read_text()
    for row in data["rows"]:
        assert row["rows_identical_to_alone"]["per_row"] == 1.0
        assert f"{row['per_row_over_per_batch']['median']:.2f}x" in section
    assert any(r["batch_size"] > 1 and r["rows_identical_to_alone"]["per_batch"] < 1.0 for r in data["rows"])


def test_memory_plan_table_in_readme_and_benchmarks_is_the_committed_results_file():
    """README's and BENCHMARKS.md's memory-plan tables are rendered from bench/results/memory-plan.json (never
    re-typed); every plan row is in them, with its peak."""
    root = Path(__file__).resolve().parents[1]
    path = root / "bench" / "results" / "memory-plan.json"
    data = json.loads(path.read_text())
    section = report.memory_plan_section(data, "bench/results/memory-plan.json")
    readme = (root / "README.md").read_text()
    start, end = report.README_BLOCK
    assert readme.split(start, 1)[1].split(end, 1)[0].strip() == section.strip()
    assert section in (root / "BENCHMARKS.md").read_text()
    for row in data["rows"]:
        assert f"**{row['plan']['peak_bytes'] / 2**30:.1f}**" in section
    measured = [r for r in data["rows"] if "measured_bytes" in r]
    assert measured and all(abs(r["measured_bytes"] / r["plan"]["peak_bytes"] - 1) <= 0.15 for r in measured)
    assert report.readme_with_memory_plan(f"a\n{start}\nold\n{end}\nb", "new") == f"a\n{start}\nnew\n{end}\nb"
