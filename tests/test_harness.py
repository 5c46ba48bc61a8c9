"""``llmdiet eval`` end to end on the demo models: numbers, resume, reports, and every bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_metrics import sacrebleu_cli

from llmdiet import cli
from llmdiet.config import merge_repeated_option
from llmdiet.engines.torch_engine import TorchSeq2SeqBackend
from llmdiet.evaluation.harness import parse_args
from llmdiet.evaluation.metrics import rouge_l

FAST = ["--max-new-tokens", "24", "--batch-size", "8", "--no_progress"]


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = cli.main(["eval", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def read_samples(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def teacher_run(demo_assets, tmp_path_factory):
    """One uninterrupted eval of the demo teacher: the first 40 rows of demo-en-fr and of demo-ko-en."""
    out = tmp_path_factory.mktemp("eval") / "teacher"
    rc = cli.main(
        [
            "eval",
            "--model",
            str(demo_assets.teacher),
            "--eval_set",
            "demo-en-fr",
            "--eval_set",
            "demo-ko-en",
            "--max_eval_samples",
            "40",
            "--output_dir",
            str(out),
            *FAST,
        ]
    )
    assert rc == 0
    return out


def test_results_json_has_the_documented_blocks(teacher_run, demo_assets):
    results = json.loads((teacher_run / "results.json").read_text())
    assert results["schema_version"] == 1 and results["kind"] == "llmdiet-eval"
    assert set(results["sets"]) == {"demo-en-fr", "demo-ko-en"}
    entry = results["sets"]["demo-en-fr"]
    assert entry["num_samples"] == 40 and entry["eval_set"]["version"] == "4"
    assert entry["eval_set"]["prefix"] == "translate English to French: "
    timing = entry["timing"]
    assert timing["num_sentences"] == 40 and timing["num_batches"] == 5 and timing["batch_size"] == 8
    assert len(timing["batch_latencies_s"]) == 5 and timing["wall_s"] > 0 and timing["resumed_from"] == 0
    assert timing["sentences_per_s"] == pytest.approx(40 / timing["wall_s"])
    assert timing["peak_rss_bytes"] > 0 and timing["peak_gpu_bytes"] is None and timing["sorted_by"] == "tokens"
    size = results["size"]
    assert size["parameters"] == sum(p.numel() for p in TorchSeq2SeqBackend(demo_assets.teacher).model.parameters())
    assert size["disk_bytes"] == sum(f.stat().st_size for f in Path(demo_assets.teacher).rglob("*") if f.is_file())
    assert size["memory_bytes"] == size["parameters"] * 4 and size["artifact"] is None
    assert results["model"]["backend"] == {
        "backend": "torch-fp32",
        "device": "cpu",
        "dtype": "float32",
        "decoding": "llmdiet static KV cache (greedy; beam search uses generate)",
    }
    prov = results["provenance"]
    assert prov["command"].startswith("llmdiet eval --model") and "--max_eval_samples 40" in prov["command"]
    assert prov["libraries"]["sacrebleu"] and prov["hardware"]["torch_threads"] >= 1 and prov["seed"] == 0
    assert results["demo"] is True
    summary = (teacher_run / "summary.md").read_text()
    assert "| demo-en-fr | 40 |" in summary and "DEMO:" in summary


def test_scores_in_results_equal_the_reference_tools_on_the_samples(teacher_run):
    results = json.loads((teacher_run / "results.json").read_text())
    for name in ("demo-en-fr", "demo-ko-en"):
        samples = sorted(read_samples(teacher_run / name / "samples.jsonl"), key=lambda s: s["index"])
        assert [s["index"] for s in samples] == list(range(40))
        assert all({"source", "reference", "hypothesis"} <= set(s) for s in samples)
        hyps, refs = [s["hypothesis"] for s in samples], [s["reference"] for s in samples]
        metrics = results["sets"][name]["metrics"]
        cli_scores = sacrebleu_cli(hyps, refs, teacher_run)
        assert round(metrics["bleu"], 4) == pytest.approx(cli_scores["bleu"], abs=1e-9)
        assert round(metrics["chrf"], 4) == pytest.approx(cli_scores["chrf"], abs=1e-9)
        assert metrics["bleu_signature"] == cli_scores["bleu_signature"] + "|unicode:NFC"
        assert metrics["rougeL"] == pytest.approx(rouge_l(hyps, refs))
    # the demo teacher is "pretrained" on En->Fr and Ko->En (training rows only): it translates both held-out sets
    assert (
        results["sets"]["demo-en-fr"]["metrics"]["bleu"] > 50 and results["sets"]["demo-ko-en"]["metrics"]["bleu"] > 50
    )


def _interrupt_after(monkeypatch, calls: int):
    original = TorchSeq2SeqBackend.translate
    count = {"n": 0}

    def flaky(self, sources, settings):
        count["n"] += 1
        if count["n"] > calls:
            raise KeyboardInterrupt("simulated kill")
        return original(self, sources, settings)

    monkeypatch.setattr(TorchSeq2SeqBackend, "translate", flaky)


def _resume_command(demo_assets, out):
    return [
        "eval",
        "--model",
        str(demo_assets.teacher),
        "--eval_set",
        "demo-en-fr",
        "demo-ko-en",
        "--max_eval_samples",
        "40",
        "--output_dir",
        str(out),
        *FAST,
    ]


def test_interrupted_run_resumes_without_duplicates_and_same_metrics(demo_assets, teacher_run, tmp_path, monkeypatch):
    out = tmp_path / "resumed"
    _interrupt_after(monkeypatch, 3)  # warm-up + 2 timed batches of demo-en-fr, then "killed"
    assert cli.main(_resume_command(demo_assets, out)) == 130  # "killed": one line, exit 130, resumable
    samples_path = out / "demo-en-fr" / "samples.jsonl"
    assert len(read_samples(samples_path)) == 16 and not (out / "results.json").exists()
    with open(samples_path, "a", encoding="utf-8") as f:  # killed in the middle of writing a line
        f.write('{"index": 3, "source": "The tea')
    monkeypatch.undo()

    assert cli.main(_resume_command(demo_assets, out)) == 0
    samples = read_samples(samples_path)
    assert sorted(s["index"] for s in samples) == list(range(40))  # complete, no duplicates
    resumed = json.loads((out / "results.json").read_text())
    reference = json.loads((teacher_run / "results.json").read_text())
    for name in ("demo-en-fr", "demo-ko-en"):
        for key in ("bleu", "chrf", "rougeL"):
            assert resumed["sets"][name]["metrics"][key] == reference["sets"][name]["metrics"][key]
    timing = resumed["sets"]["demo-en-fr"]["timing"]
    assert timing["resumed_from"] == 16 and timing["generated_this_run"] == 24 and timing["num_sentences"] == 24
    assert timing["covers_all_rows"] is False
    assert resumed["sets"]["demo-ko-en"]["timing"]["resumed_from"] == 0


def test_a_partly_written_batch_is_redone_whole_and_not_duplicated(demo_assets, teacher_run, tmp_path, capsys):
    out = tmp_path / "partial"
    assert cli.main(_resume_command(demo_assets, out)) == 0
    samples_path = out / "demo-en-fr" / "samples.jsonl"
    kept = samples_path.read_text(encoding="utf-8").splitlines()[:13]  # 1 batch of 8, then 5 of the next
    samples_path.write_text("\n".join(kept) + "\n", encoding="utf-8")
    assert cli.main(_resume_command(demo_assets, out)) == 0
    samples = read_samples(samples_path)
    assert sorted(s["index"] for s in samples) == list(range(40))
    timing = json.loads((out / "results.json").read_text())["sets"]["demo-en-fr"]["timing"]
    assert timing["resumed_from"] == 13 and timing["generated_this_run"] == 32  # the partial batch is redone whole
    reference = json.loads((teacher_run / "results.json").read_text())["sets"]["demo-en-fr"]["metrics"]
    assert json.loads((out / "results.json").read_text())["sets"]["demo-en-fr"]["metrics"]["bleu"] == reference["bleu"]
    # a finished run re-run translates nothing and keeps the earlier timing
    assert cli.main(_resume_command(demo_assets, out)) == 0
    again = json.loads((out / "results.json").read_text())["sets"]["demo-en-fr"]
    assert again["timing"] == timing and len(read_samples(samples_path)) == 40


def test_resuming_with_other_settings_is_refused(demo_assets, teacher_run, capsys):
    argv = _resume_command(demo_assets, teacher_run)[1:]
    rc, _, err = run_cli(capsys, *[a if a != "24" else "30" for a in argv])
    assert rc == 2 and "different settings" in err and "max_new_tokens (24 -> 30)" in err
    assert "use a new --output_dir" in err and "Traceback" not in err
    rc, _, err = run_cli(capsys, *argv[: -len(FAST)], "--max_eval_samples", "20", *FAST)
    assert rc == 2 and "demo-en-fr.limit (40 -> 20)" in err


def test_repeated_and_multi_value_eval_set_flags():
    assert merge_repeated_option(
        ["--eval_set", "a", "--output_dir", "x", "--eval_set", "b", "c", "--eval_set=d"], ("--eval_set", "--eval_set")
    ) == ["--output_dir", "x", "--eval_set", "a", "b", "c", "d"]
    args = parse_args(["--model", "m", "--output_dir", "o", "--eval_set", "a", "--eval_set", "b", "c"])
    assert args.eval_set == ["a", "b", "c"]


def test_demo_preset_evaluates_the_teacher_on_the_three_offline_sets(demo_assets, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert parse_args(["--preset", "demo"]).output_dir == "runs/eval-demo-teacher"
    rc, out, _ = run_cli(capsys, "--preset", "demo", "--max_eval_samples", "8", *FAST)
    assert rc == 0 and "DEMO: tiny shipped models" in out
    results = json.loads((tmp_path / "runs/eval-demo-teacher/results.json").read_text())
    assert list(results["sets"]) == ["demo-en-fr", "demo-fr-en", "demo-ko-en"]
    assert Path(results["model"]["path"]) == demo_assets.teacher.resolve()  # the shipped bytes, nothing built
    for name in results["sets"]:
        assert f"| {name} | 8 |" in out  # the summary table printed at the end


def test_local_file_sets_and_counted_skips(demo_assets, tmp_path, capsys):
    tsv = tmp_path / "pairs.tsv"  # headerless two-column TSV, as parallel corpora are often shipped
    tsv.write_text(
        "My sister buys bread.\tMa sœur achète du pain.\nThe children read.\tLes enfants lisent.\n", encoding="utf-8"
    )
    bad = tmp_path / "with_blank.jsonl"
    bad.write_text(
        "\n".join(
            json.dumps(r, ensure_ascii=False)
            for r in [
                {"en": "The farmers buy bread today.", "fr": "Les agriculteurs achètent du pain aujourd'hui."},
                {"en": "", "fr": "Vide."},
                {"en": "My parents read the report today.", "fr": "Mes parents lisent le rapport aujourd'hui."},
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    rc, out, err = run_cli(
        capsys,
        "--model",
        demo_assets.teacher,
        "--eval_set",
        tsv,
        bad,
        "--source-column",
        "en",
        "--reference-column",
        "fr",
        "--no-header",
        "--output_dir",
        tmp_path / "run",
        *FAST,
    )
    assert rc == 2 and "with_blank.jsonl:2: field 'en' is empty" in err
    rc, out, err = run_cli(
        capsys,
        "--model",
        demo_assets.teacher,
        "--eval_set",
        bad,
        "--source-column",
        "en",
        "--reference-column",
        "fr",
        "--skip-bad-rows",
        "--output_dir",
        tmp_path / "run2",
        *FAST,
    )
    assert rc == 0
    entry = json.loads((tmp_path / "run2" / "results.json").read_text())["sets"]["with_blank"]
    assert (
        entry["num_samples"] == 2
        and entry["skipped_rows"]["total"] == 1
        and entry["skipped_rows"]["reasons"] == {"empty": 1}
    )
    # without --no-header the first row is a header, and "My sister buys bread." is no column name: refused
    rc, out, err = run_cli(
        capsys, "--model", demo_assets.teacher, "--eval_set", tsv, "--output_dir", tmp_path / "run4", *FAST
    )
    assert rc == 2 and "pairs.tsv:1: the header row has columns" in err and "--no_header" in err
    assert not (tmp_path / "run4" / "results.json").exists()
    rc, out, err = run_cli(
        capsys,
        "--model",
        demo_assets.teacher,
        "--eval_set",
        tsv,
        "--no-header",
        "--output_dir",
        tmp_path / "run3",
        *FAST,
    )
    assert rc == 0
    samples = read_samples(tmp_path / "run3" / "pairs" / "samples.jsonl")
    assert {s["reference"] for s in samples} == {"Ma sœur achète du pain.", "Les enfants lisent."}


@pytest.fixture
def not_seq2seq_model(tmp_path):
    from transformers import GPT2Config

    path = tmp_path / "gpt2-tiny"
    GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=32).save_pretrained(path)
    return path


@pytest.mark.parametrize(
    "case",
    [
        "unknown_set",
        "missing_columns",
        "empty_file",
        "not_seq2seq",
        "missing_model",
        "hub_offline",
        "bad_limit",
        "unknown_backend",
        "bad_decoding",
        "no_model",
    ],
)
def test_bad_input_gives_a_clear_error_without_traceback(case, demo_assets, not_seq2seq_model, tmp_path, capsys):
    model, eval_set, extra = str(demo_assets.teacher), "demo-en-fr", []
    columns = tmp_path / "columns.jsonl"
    columns.write_text(json.dumps({"en": "Hello.", "fr": "Bonjour."}) + "\n")
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    expected = {
        "unknown_set": "unknown eval set 'demo-en-de' (known: demo-en-fr-dev, demo-en-fr, demo-fr-en-train, demo-fr-en, demo-ko-en-train, demo-ko-en",
        "missing_columns": "columns.jsonl:1: no field 'source'",
        "empty_file": "empty.tsv: no usable rows (file is empty)",
        "not_seq2seq": "is a 'gpt2' model, not a sequence-to-sequence",
        "missing_model": "local path does not exist",
        "hub_offline": "Offline? Use the offline sets",
        "bad_limit": "--max_eval_samples must be >= 1, got 0",
        "unknown_backend": "unknown backend 'torch-fp16' (known:",
        "bad_decoding": "--decoding must be static or generate, got 'fast'",
        "no_model": "--model is required",
    }[case]
    if case == "unknown_set":
        eval_set = "demo-en-de"
    elif case == "missing_columns":
        eval_set = str(columns)
    elif case == "empty_file":
        eval_set = str(empty)
    elif case == "not_seq2seq":
        model = str(not_seq2seq_model)
    elif case == "missing_model":
        model = str(tmp_path / "no-such-model")
    elif case == "hub_offline":
        eval_set = "pgv-en-fr"
    elif case == "bad_limit":
        extra = ["--max_eval_samples", "0"]
    elif case == "unknown_backend":
        extra = ["--backend", "torch-fp16"]
    elif case == "bad_decoding":
        extra = ["--decoding", "fast"]
    argv = ["--eval_set", eval_set, "--output_dir", tmp_path / "out", *extra, *FAST]
    rc, _, err = run_cli(capsys, *([] if case == "no_model" else ["--model", model]), *argv)
    assert rc == 2
    assert expected in err and err.startswith("llmdiet eval: error:") and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # nothing written for a run that could not start


@pytest.mark.slow
def test_killed_process_resumes_to_identical_metrics(demo_assets, tmp_path):
    """A real SIGKILL in the middle of a run, then the same command again."""
    out = tmp_path / "killed"
    argv = [sys.executable, "-m", "llmdiet.cli", *_resume_command(demo_assets, out)]
    argv[argv.index("8")] = "2"  # small batches: more chances to be killed mid-run
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples_path = out / "demo-en-fr" / "samples.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if samples_path.exists() and len(samples_path.read_bytes().splitlines()) >= 6:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(samples_path.read_bytes().splitlines())
    assert 6 <= done_before < 40 and not (out / "results.json").exists()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples = read_samples(samples_path)
    assert sorted(s["index"] for s in samples) == list(range(40))
    resumed = json.loads((out / "results.json").read_text())["sets"]
    assert resumed["demo-en-fr"]["timing"]["resumed_from"] >= 6
    # the same command never interrupted gives exactly the same scores
    fresh = tmp_path / "fresh"
    subprocess.run(
        [*argv[: argv.index(str(out))], str(fresh), *argv[argv.index(str(out)) + 1 :]],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    reference = json.loads((fresh / "results.json").read_text())["sets"]
    for name in resumed:
        for key in ("bleu", "chrf", "rougeL"):
            assert resumed[name]["metrics"][key] == reference[name]["metrics"][key]


def test_huge_source_is_truncated_and_counted(demo_assets, tmp_path, capsys):
    """Before: a 100,000-character source tried to allocate 172 GB (eval sources were not truncated)."""
    path = tmp_path / "long.jsonl"
    rows = [
        {"source": "The farmers buy bread today. " * 3500, "reference": "Les agriculteurs achètent du pain."},
        {"source": "My sister reads.", "reference": "Ma sœur lit."},
    ]
    assert len(rows[0]["source"]) > 100_000
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    rc, out, err = run_cli(
        capsys,
        "--model",
        demo_assets.teacher,
        "--eval_set",
        path,
        "--max_source_length",
        "64",
        "--output_dir",
        tmp_path / "run",
        *FAST,
    )
    assert rc == 0, err
    entry = json.loads((tmp_path / "run" / "results.json").read_text())["sets"]["long"]
    assert entry["truncated_sources"] == 1 and entry["max_source_length"] == 64 and entry["num_samples"] == 2


def test_second_run_into_a_locked_directory_stops_at_once(demo_assets, tmp_path, capsys):
    """Before: two runs into one --output_dir both ran for minutes, then both failed on duplicate rows."""
    from llmdiet.locking import directory_lock

    out = tmp_path / "run"
    with directory_lock(out, "llmdiet eval"):  # a first run holds the directory
        rc, _, err = run_cli(
            capsys,
            "--model",
            demo_assets.teacher,
            "--eval_set",
            "demo-en-fr",
            "--max_eval_samples",
            "4",
            "--output_dir",
            out,
            *FAST,
        )
        assert rc == 2 and "is in use by a running llmdiet eval (pid" in err and len(err.strip().splitlines()) == 1
        assert [p.name for p in out.iterdir()] == [".llmdiet.lock"]  # nothing of the first run's was touched
    rc, _, err = run_cli(
        capsys,
        "--model",
        demo_assets.teacher,
        "--eval_set",
        "demo-en-fr",
        "--max_eval_samples",
        "4",
        "--output_dir",
        out,
        *FAST,
    )
    assert rc == 0, err  # the lock died with its holder


def test_out_that_is_a_file_or_not_creatable(demo_assets, tmp_path, capsys):
    a_file = tmp_path / "results.txt"
    a_file.write_text("keep me")
    rc, _, err = run_cli(
        capsys, "--model", demo_assets.teacher, "--eval_set", "demo-en-fr", "--output_dir", a_file, *FAST
    )
    assert rc == 2 and "exists and is not a directory" in err and a_file.read_text() == "keep me"
    rc, _, err = run_cli(
        capsys, "--model", demo_assets.teacher, "--eval_set", "demo-en-fr", "--output_dir", a_file / "sub", *FAST
    )
    assert rc == 2 and "cannot write there" in err


def test_a_run_killed_before_its_results_keeps_the_sets_timing(demo_assets, tmp_path):
    """Every row translated, then killed before results.json: the resumed run had no timing for the set (the
    study's throughput column went '-'); now it times the set again, without rewriting the samples."""
    from llmdiet.evaluation.harness import EvalArguments, run_eval

    args = EvalArguments(
        model=str(demo_assets.teacher),
        eval_set=["demo-en-fr"],
        output_dir=str(tmp_path / "run"),
        max_eval_samples=16,
        batch_size=8,
        max_new_tokens=24,
        progress=False,
    )
    first = run_eval(args)
    samples = (tmp_path / "run" / "demo-en-fr" / "samples.jsonl").read_text()
    (tmp_path / "run" / "results.json").unlink()  # the kill
    again = run_eval(args)
    timing = again["sets"]["demo-en-fr"]["timing"]
    assert timing["retimed"] and timing["sentences_per_s"] > 0 and timing["num_sentences"] == 16
    assert (tmp_path / "run" / "demo-en-fr" / "samples.jsonl").read_text() == samples
    assert again["sets"]["demo-en-fr"]["metrics"] == first["sets"]["demo-en-fr"]["metrics"]
