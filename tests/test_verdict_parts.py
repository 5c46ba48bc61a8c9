"""The pieces of a decision-grade verdict: honest sizes, degenerate outputs, speed verdicts, no test-row selection."""

from __future__ import annotations

import pytest

from llmdiet.config import ConfigError
from llmdiet.evaluation.metrics import degenerate_outputs, repeats_ngram
from llmdiet.modeling import counted_files, directory_bytes
from llmdiet.study.speed import round_order, speed_ratio, summarise


def test_size_counts_the_model_not_its_by_products(tmp_path):
    """A student directory's logs, plot, training args, checkpoints and an artifact saved inside it are not the
    model (before: 627 KB counted for a 542 KB model; an inner artifact added 45%)."""
    model = tmp_path / "student"
    model.mkdir()
    files = {
        "model.safetensors": 5000,
        "config.json": 300,
        "generation_config.json": 100,
        "tokenizer.json": 800,
        "tokenizer_config.json": 200,
        "special_tokens_map.json": 50,
        "spiece.model": 400,
    }
    junk = {
        "training_log.json": 4000,
        "loss_curve.png": 9000,
        "training_args.bin": 700,
        "README.md": 600,
        "trainer_state.json": 100,
        "notes.txt.tmp": 10,
    }
    for name, size in {**files, **junk}.items():
        (model / name).write_bytes(b"x" * size)
    for sub in ("checkpoint-20", "int8"):  # a Trainer checkpoint and a nested artifact
        (model / sub).mkdir()
        (model / sub / "config.json").write_bytes(b"x" * 999)
        (model / sub / "model.safetensors").write_bytes(b"x" * 5000)
    (model / "int8" / "llmdiet_artifact.json").write_text("{}")
    assert counted_files(model) == sorted(files)
    assert directory_bytes(model) == sum(files.values())
    assert directory_bytes(tmp_path / "missing") == 0


def test_runaway_loops_and_capped_outputs_are_degenerate():
    """5 of 200 outputs looping 'le rapport le rapport ...' to the cap were reported as 0.0 (one-word rule)."""
    loop = "Mes parents lisent le rapport le rapport le rapport le rapport"
    assert repeats_ngram(loop.split()) and not repeats_ngram("Le chat voit le chien et le chat.".split())
    hyps = ["Le professeur lit un livre."] * 195 + [loop] * 5
    old_rule = degenerate_outputs(hyps)
    assert old_rule["repeated_ngram"] == 5 and old_rule["share"] == pytest.approx(5 / 200)
    capped = degenerate_outputs(["a b c"] * 4, generated_tokens=[5, 64, 10, 64], max_new_tokens=64)
    assert capped["hit_max_new_tokens"] == 2 and capped["flagged"] == 2 and capped["share"] == 0.5
    assert "max_new_tokens (64)" in capped["rule"] and "3+ times in a row" in capped["rule"]


def test_speed_is_a_gain_only_when_the_spreads_do_not_overlap():
    teacher = {"median": 100.0, "min": 90.0, "max": 110.0}
    assert speed_ratio({"median": 200.0, "min": 180.0, "max": 220.0}, teacher, True) == {"x": 2.0, "verdict": "faster"}
    assert speed_ratio({"median": 120.0, "min": 105.0, "max": 130.0}, teacher, True)["verdict"] == "within noise"
    assert speed_ratio({"median": 50.0, "min": 45.0, "max": 60.0}, teacher, True)["verdict"] == "slower"
    # latency: lower is faster
    assert speed_ratio({"median": 50.0, "min": 45.0, "max": 60.0}, teacher, False) == {"x": 2.0, "verdict": "faster"}
    # rounds alternate the order; the summary is the median and the min-max of the rounds
    assert round_order(["a", "b", "c"], 1) == ["c", "b", "a"]
    timings = [
        {"round": r, "model": "m", "batch1": {"ms_per_sentence": v}, "batched": {"sentences_per_s": 10 * v}}
        for r, v in enumerate([3.0, 1.0, 2.0])
    ]
    s = summarise(timings)["m"]
    assert (s["latency_ms"]["median"], s["latency_ms"]["min"], s["latency_ms"]["max"]) == (2.0, 1.0, 3.0)
    assert s["throughput"]["repeats"] == 3


def test_distill_refuses_dev_rows_that_are_test_rows(demo_assets, tmp_path, capsys):
    """The demo preset used to pick its best checkpoint on rows 1000-1199 = the demo-en-fr test set."""
    from llmdiet import cli
    from llmdiet.distill.job import DataArguments, demo_preset

    preset = demo_preset()
    assert (preset["eval_start"], preset["eval_rows"]) == (1800, 200)
    data = DataArguments(data_files=preset["data_files"], train_rows=1000, eval_start=1000, eval_rows=200)
    assert data.leaks() == ["the dev rows [1000, 1200) are test rows of demo-en-fr (rows 1000-1199)"]
    assert DataArguments(data_files=preset["data_files"], train_rows=1000, eval_start=1800, eval_rows=200).leaks() == []
    with pytest.raises(ConfigError, match="overlap the training rows"):
        DataArguments(train_rows=1000, eval_start=500, eval_rows=10)
    code = cli.main(
        [
            "distill",
            "--preset",
            "demo",
            "--eval_start",
            "1000",
            "--output_dir",
            str(tmp_path / "out"),
            "--max_steps",
            "1",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "test rows of demo-en-fr" in err[-1]


def test_the_demo_teacher_is_good_but_not_perfect(demo_assets, tmp_path):
    """The demo teacher scored BLEU 100 [100, 100] in-domain, so every teacher quantization read +0.00; the v3
    corpus has ambiguous references (several correct translations), so it is good but not perfect."""
    from llmdiet.evaluation.harness import EvalArguments, run_eval

    res = run_eval(
        EvalArguments(
            model=str(demo_assets.teacher),
            eval_set=["demo-en-fr", "demo-en-fr-dev"],
            out=str(tmp_path / "eval"),
            batch_size=64,
            max_new_tokens=64,
            progress=False,
        )
    )
    for name in ("demo-en-fr", "demo-en-fr-dev"):
        # measured: ~80 (torch 2.13 + transformers 4.57), 85.5 (torch 2.15 + transformers 5.24); far from 100
        assert 40 <= res["sets"][name]["metrics"]["bleu"] <= 90, res["sets"][name]["metrics"]["bleu"]
    assert res["sets"]["demo-en-fr"]["num_samples"] == 600
    counted = res["size"]["disk_counted"]
    assert "model.safetensors" in counted and res["size"]["disk_bytes"] > 0
