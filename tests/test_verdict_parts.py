"""The pieces of a decision-grade verdict: honest sizes, degenerate outputs, speed verdicts, no test-row selection."""

from __future__ import annotations

import json
from pathlib import Path

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
            output_dir=str(tmp_path / "eval"),
            batch_size=64,
            max_new_tokens=64,
            progress=False,
        )
    )
    for name in ("demo-en-fr", "demo-en-fr-dev"):
        # the shipped teacher: near the best achievable (87.62 on demo-en-fr), far from 100
        assert 40 <= res["sets"][name]["metrics"]["bleu"] <= 92, res["sets"][name]["metrics"]["bleu"]
    assert res["sets"]["demo-en-fr"]["num_samples"] == 600
    counted = res["size"]["disk_counted"]
    assert "model.safetensors" in counted and res["size"]["disk_bytes"] > 0


def _leaky_training_file(tmp_path) -> Path:
    """An en->fr training file whose rows are fine by row range, but 5 of whose French targets are French sources
    of the demo-fr-en test set (another file, another direction: the row-range check cannot see it)."""
    from llmdiet.demo import DEMO_EN_FR
    from llmdiet.evaluation.eval_sets import resolve_eval_set

    rows = [json.loads(line) for line in DEMO_EN_FR.read_text(encoding="utf-8").splitlines()[:40]]
    test = resolve_eval_set("demo-fr-en").load()[:5]
    rows[:5] = [{"en": t.target, "fr": t.source} for t in test]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_distill_refuses_training_sentences_of_a_test_set_by_content(demo_assets, tmp_path, capsys):
    from llmdiet import cli

    common = ["distill", "--preset", "demo", "--data_files", str(_leaky_training_file(tmp_path)), "--train_rows"]
    common += ["40", "--eval_rows", "0", "--max_steps", "1", "--save_strategy", "no", "--eval_strategy", "no"]
    code = cli.main([*common, "--output_dir", str(tmp_path / "refused")])
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        code == 2 and "5/40 training rows share a sentence with demo-fr-en" in err[-1] and "--test_overlap" in err[-1]
    )
    assert not (tmp_path / "refused" / "training_log.json").exists()
    assert cli.main([*common, "--output_dir", str(tmp_path / "dropped"), "--test_overlap", "drop"]) == 0
    log = json.loads((tmp_path / "dropped" / "training_log.json").read_text())
    assert log["test_overlap"]["rows"] == {"training": {"demo-fr-en": 5}}
    assert (
        "demo-ko-en" in log["test_overlap"]["checked_sets"] and "demo-en-fr-dev" in log["test_overlap"]["checked_sets"]
    )


def test_replay_mixes_the_stated_share_of_other_directions_with_their_prefixes(demo_assets, tmp_path, capfd):
    from llmdiet.distill.job import distill
    from llmdiet.distill.replay import load_replay, replay_count

    assert replay_count(1000, 0.2) == 250 and replay_count(40, 0.2) == 10
    sets = load_replay(["demo-fr-en-train", "demo-ko-en-train"], 0.2, 40, seed=0)
    assert [(s.name, len(s.rows), s.prefix) for s in sets] == [
        ("demo-fr-en-train", 5, "translate French to English: "),
        ("demo-ko-en-train", 5, "translate Korean to English: "),
    ]
    assert sets[1].rows[0].source != sets[1].rows[0].target and all(r.source[0] >= "\uac00" for r in sets[1].rows)
    summary = distill(
        preset="demo",
        output_dir=str(tmp_path / "replay"),
        train_rows=40,
        eval_rows=0,
        max_steps=1,
        save_strategy="no",
        eval_strategy="no",
        replay_set=["demo-fr-en-train", "demo-ko-en-train"],
        replay_fraction=0.2,
    )
    assert "were not sharded" not in "".join(capfd.readouterr())  # transformers' tensor-parallel notice (issue 31)
    assert summary["replay"]["rows"] == 10 and summary["replay"]["sets"]["demo-ko-en-train"]["rows"] == 5
    assert summary["truncation"]["train"]["examples"] == 50  # 40 training + 10 replay rows were tokenized
    card = (tmp_path / "replay" / "README.md").read_text()
    assert "replay against forgetting: 10 rows (20% of the mix)" in card
    with pytest.raises(ConfigError, match="replay_fraction"):
        distill(preset="demo", output_dir=str(tmp_path / "x"), replay_set=["demo-ko-en-train"], replay_fraction=1.0)


def test_replay_is_refused_in_one_line_for_families_without_task_prefixes(demo_assets, tmp_path, capsys):
    """Marian, BART and M2M100 pick their direction by model or language code, not by a text prefix: replay rows of
    another direction would be silently wrong for them."""
    import json as _json

    from llmdiet import cli

    marian = tmp_path / "marian"
    marian.mkdir()
    (marian / "config.json").write_text(_json.dumps({"model_type": "marian", "is_encoder_decoder": True}))
    argv = ["distill", "--preset", "demo", "--student_model", str(marian), "--output_dir", str(tmp_path / "o")]
    assert cli.main([*argv, "--replay_set", "demo-ko-en-train"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("llmdiet distill: error: --replay_set:") and "marian models do not read" in err[-1]
    assert not (tmp_path / "o").exists()
