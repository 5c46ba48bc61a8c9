"""``llmdiet study``: a tiny study end to end, its consistency with the results files, resuming, --job/--report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llmdiet import cli
from llmdiet.demo import DEMO_EN_FR, DEMO_KO_EN, DEMO_TRAIN_ROWS
from llmdiet.demo.build import pretraining_rows
from llmdiet.evaluation.eval_sets import resolve_eval_set
from llmdiet.evaluation.statistics import confidence_interval
from llmdiet.study.config import load_study_config
from llmdiet.study.figures import pareto_front
from llmdiet.study.plan import build_plan
from llmdiet.study.runners import run_all
from llmdiet.study.state import status

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(demo_assets, study_dir: Path, **changes) -> dict:
    config = {
        "study_dir": str(study_dir),
        "teacher": str(demo_assets.teacher),
        "student": str(demo_assets.student),
        "seed": 0,
        "alphas": [0, 0.5],
        "distill": {
            "preset": "demo",
            "max_steps": 8,
            "eval_strategy": "no",
            "save_strategy": "steps",
            "save_steps": 4,
            "load_best_model_at_end": False,
            "predict_with_generate": False,
            "logging_steps": 2,
            "disable_tqdm": True,
            "teacher_cache": "teacher-topk",
        },
        "quantize": {"methods": ["dynamic-int8"], "students": ["alpha-0.5"], "calibration_count": 8},
        "bit_sweep": {
            "bits": [4],
            "methods": ["rtn", "gpfq"],
            "models": ["teacher", "alpha-0.5"],
            "limit": 16,
            "calibration_rows": 8,
        },
        # out of domain given as a file path (before: every job ran, then the report crashed with a KeyError)
        "eval": {
            "in_domain": ["demo-en-fr"],
            "out_of_domain": [str(ROOT / "eval_sets" / "demo-ko-en.yaml")],
            "limit": 24,
            "batch_size": 8,
            "max_new_tokens": 24,
            "latency_sentences": 4,
            "speed_sentences": 8,
            "dev": "demo-en-fr-dev",
            "draft": "alpha-0.5",  # adds teacher+draft:alpha-0.5 (speculative decoding)
        },
        "statistics": {"n_bootstrap": 200},
        "verdict": {"n_resamples": 2000},
    }
    for key, value in changes.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) else value
    return config


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def study(demo_assets, tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    config = write_config(root / "study.yaml", tiny_config(demo_assets, root / "run"))
    assert cli.main(["study", "--config", str(config)]) == 0
    return config, root / "run"


def _table(markdown: str, heading: str) -> list[dict]:
    """The rows of the first table after ``heading`` as {header: cell}."""
    section = markdown.split(heading, 1)[1]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    lines = lines[: next((i for i, line in enumerate(lines) if i > 1 and not line.startswith("|")), len(lines))]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = []
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != len(header):
            break
        rows.append(dict(zip(header, cells)))
    return rows


def test_every_job_figure_and_table_exists(study):
    config, run = study
    plan = build_plan(load_study_config(config))
    assert all(status(plan, name) == "done" for name in plan.jobs)
    assert set(plan.jobs) >= {
        "train/alpha-0",
        "train/alpha-0.5",
        "quantize/teacher+dynamic-int8",
        "quantize/alpha-0.5+dynamic-int8",
        "eval/teacher",
        "eval/student-vanilla",
        "eval/alpha-0.5+dynamic-int8",
        "bits/teacher",
        "bits/alpha-0.5",
    }
    assert (run / "shared" / "teacher-topk-k32-T2" / "meta.json").exists()  # one teacher cache, shared
    figures = {p.name for p in (run / "figures").glob("*.png")}
    assert figures == {
        "bleu_by_alpha.png",
        "rougeL_by_alpha.png",
        "loss_curves.png",
        "bleu_vs_size.png",
        "bleu_vs_latency.png",
        "bleu_vs_throughput.png",
        "bleu_vs_bits.png",
    }
    text = (run / "STUDY.md").read_text()
    for heading in (
        "## Distill, quantize or both?",
        "## Verdict",
        "## All results",
        "## Bit width",
        "## Provenance",
        "## Reproduce",
        "**Answer for this study",
    ):
        assert heading in text
    # local model paths, but the demo eval sets: the page carries the demo banner
    assert "> DEMO: tiny shipped models" in text.split("##")[0] and "written for llmdiet" in text
    assert "git sha" in text and "nrefs:1" in text  # provenance and sacreBLEU signatures
    # speed: 3 interleaved rounds of every model (one run per model before), median and spread in the results
    data = json.loads((run / "study_results.json").read_text())
    timings = [json.loads(x) for x in (run / "speed" / "timings.jsonl").read_text().splitlines()]
    assert sorted((t["round"], t["model"]) for t in timings) == sorted((r, m) for r in range(3) for m in data["models"])
    for m in data["models"].values():
        assert (
            m["latency"]["repeats"] == 3
            and m["latency"]["min"] <= m["latency"]["ms_per_sentence"] <= m["latency"]["max"]
        )
        assert m["size_counted"] and not any(
            f.endswith((".png", "training_log.json", "training_args.bin")) for f in m["size_counted"]
        )
        assert m["batch_invariance"]["rows"] == 4 and "dev" not in data["decisions"]["teacher"]["rule"]["sets"]
    assert "## Batch composition" in text and "demo-en-fr-dev" in text


def test_study_md_numbers_equal_the_results_files(study):
    """Every BLEU/chrF/ROUGE-L cell, CI, size and Δ in STUDY.md equals what the jobs' files say."""
    config, run = study
    text = (run / "STUDY.md").read_text()
    rows = _table(text, "## All results")
    assert len(rows) == 7  # teacher, vanilla, 2 students, the teacher and alpha-0.5 quantized, teacher+draft
    results = {}
    for row in rows:
        label = row["model"].strip("`")
        res = json.loads((run / "eval" / label / "results.json").read_text())
        stats = json.loads((run / "eval" / label / "statistics.json").read_text())
        results[label] = res
        for set_name in ("demo-en-fr", "demo-ko-en"):
            m = res["sets"][set_name]["metrics"]
            ci = stats[set_name]["bleu"]
            assert row[f"{set_name} BLEU [95% CI]"] == f"{m['bleu']:.2f} [{ci['low']:.2f}, {ci['high']:.2f}]"
            assert row[f"{set_name} chrF"] == f"{m['chrf']:.2f}"
            assert row[f"{set_name} ROUGE-L"] == f"{m['rougeL']:.2f}"
        size = res["size"].get("disk_bytes") or res["size"]["memory_bytes"]
        assert row["size MB"] == f"{size / 1e6:.2f}"
    # the verdict's deltas are model minus teacher on the same sentences, with sacreBLEU's paired test
    teacher = results["teacher"]["sets"]["demo-en-fr"]["metrics"]["bleu"]
    for row in _table(text, "## Verdict"):
        label = row["model"].strip("`")
        delta = results[label]["sets"]["demo-en-fr"]["metrics"]["bleu"] - teacher
        assert row["ΔBLEU demo-en-fr"].startswith(f"{delta:+.2f} [")
    # the bit-width table is the sweep's points
    bits = {r["model"].strip("`") + r["method"]: r for r in _table(text, "## Bit width")}
    for label in ("teacher", "alpha-0.5"):
        points = json.loads((run / "bits" / label / "bit_sweep.json").read_text())["points"]
        for p in points:
            if p["method"] != "float":
                assert bits[label + p["method"].upper()][f"{p['bits']}-bit"] == f"{p['bleu']:.2f}"
    data = json.loads((run / "study_results.json").read_text())
    assert data["missing"] == [] and set(data["models"]) == set(results)


def test_the_teacher_with_a_student_drafting_gives_the_teachers_output(study):
    """eval.draft: the fp32 teacher with speculative decoding scores exactly as the teacher, with its acceptance."""
    config, run = study
    label = "teacher+draft:alpha-0.5"

    def hyps(name):
        return sorted(
            (json.loads(x)["index"], json.loads(x)["hypothesis"])
            for x in (run / "eval" / name / "demo-en-fr" / "samples.jsonl").read_text().splitlines()
        )

    assert hyps(label) == hyps("teacher")
    data = json.loads((run / "study_results.json").read_text())
    row = data["models"][label]
    assert row["role"] == "speculative" and row["draft"] == "alpha-0.5"
    accepted = row["speculative"]["demo-en-fr"]
    assert accepted["proposed"] > 0 and 0 <= accepted["acceptance_rate"] <= 1
    text = (run / "STUDY.md").read_text()
    assert "**Speculative decoding**" in text and f"`{label}`" in text
    answer_line = next(line for line in text.splitlines() if "**Answer for this study" in line)
    assert label not in answer_line  # a compression is chosen, never the teacher itself


def test_statistics_in_the_study_equal_sacrebleu_on_the_samples(study):
    config, run = study
    data = json.loads((run / "study_results.json").read_text())

    def hyps(label):
        lines = (run / "eval" / label / "demo-en-fr" / "samples.jsonl").read_text().splitlines()
        samples = sorted((json.loads(x) for x in lines), key=lambda s: s["index"])
        return [s["hypothesis"] for s in samples], [s["reference"] for s in samples]

    h, refs = hyps("alpha-0.5")
    ci = confidence_interval(h, refs, "bleu", n_bootstrap=200, seed=12345)
    assert data["models"]["alpha-0.5"]["sets"]["demo-en-fr"]["bleu_ci"] == pytest.approx(ci)
    assert 0 <= ci["low"] <= ci["high"] <= 100


def _sacrebleu_resampled(hyps: list[str], refs: list[str], metric: str, idx):
    import numpy as np
    from sacrebleu.metrics import BLEU, CHRF

    scorer = BLEU() if metric == "bleu" else CHRF()
    stats = np.array(scorer._extract_corpus_statistics(hyps, [refs]), dtype="float32")
    return np.array([scorer._compute_score_from_stats(x.sum(0)).score for x in stats[idx]])


def test_the_verdict_follows_the_rule_recomputed_from_the_job_files(study):
    """Independently of llmdiet's statistics code: sacreBLEU's own per-resample scores on sacreBLEU's draw, the
    one-sided percentile test against the margin, intersection-union over metrics, Holm over the candidates."""
    import numpy as np

    config, run = study
    data = json.loads((run / "study_results.json").read_text())
    cfg = load_study_config(config)
    margins, alpha, b = cfg.verdict.margin, 1 - cfg.verdict.confidence, cfg.verdict.n_resamples

    def hyps(label):
        lines = (run / "eval" / label / "demo-en-fr" / "samples.jsonl").read_text().splitlines()
        samples = sorted((json.loads(x) for x in lines), key=lambda s: s["index"])
        return [s["hypothesis"] for s in samples], [s["reference"] for s in samples]

    teacher, refs = hyps("teacher")
    idx = np.random.default_rng(cfg.statistics.seed).choice(len(refs), size=(b, len(refs)), replace=True)
    # the compressed models; the teacher with a student drafting is the teacher itself, never a candidate
    candidates = [label for label, m in data["models"].items() if label != "teacher" and m["role"] != "speculative"]
    assert len(candidates) == len(data["models"]) - 2
    p_ni, p_inf = {}, {}
    for label in candidates:
        h, _ = hyps(label)
        ni, inf = [], []
        for metric, margin in margins.items():
            deltas = _sacrebleu_resampled(h, refs, metric, idx) - _sacrebleu_resampled(teacher, refs, metric, idx)
            ni.append((1 + np.sum(deltas <= -margin)) / (b + 1))
            inf.append((1 + np.sum(deltas >= -margin)) / (b + 1))
            got = data["decisions"]["teacher"]["models"][label]["tests"][f"demo-en-fr/{metric}"]
            level = 1 - 2 * alpha / len(candidates)
            assert got["low"] == pytest.approx(np.quantile(deltas, (1 - level) / 2), abs=1e-4)
            assert got["high"] == pytest.approx(np.quantile(deltas, 1 - (1 - level) / 2), abs=1e-4)
        p_ni[label], p_inf[label] = max(ni), min(1.0, len(inf) * min(inf))

    def holm(p):
        out, ok = {}, True
        for rank, label in enumerate(sorted(p, key=p.get)):
            ok = ok and p[label] <= alpha / (len(p) - rank)
            out[label] = ok
        return out

    ni_ok, inf_ok = holm(p_ni), holm(p_inf)
    expected = {x: "non-inferior" if ni_ok[x] else "inferior" if inf_ok[x] else "inconclusive" for x in candidates}
    assert {x: data["decisions"]["teacher"]["models"][x]["label"] for x in candidates} == expected
    # the answer names a non-inferior model, or none; never one the rule did not accept
    text = (run / "STUDY.md").read_text()
    answer = text.split("**Answer for this study", 1)[1].split("\n", 1)[0]
    named = answer.split("`")[1] if ": no compressed model" not in answer else None
    assert named is None or expected[named] == "non-inferior"
    assert "non-inferior" in text and "Holm" in text and "margin" in text  # the rule is stated beside the verdict


def test_a_second_run_recomputes_nothing(study):
    config, run = study
    before = {p: p.stat().st_mtime_ns for p in run.rglob("results.json")}
    plan = build_plan(load_study_config(config))
    assert set(run_all(plan).values()) == {"skipped"}
    assert {p: p.stat().st_mtime_ns for p in run.rglob("results.json")} == before


def test_jobs_one_by_one_in_separate_processes_give_the_same_study(study, demo_assets, tmp_path):
    """--list, then every job through --job (one process per kind of job), then --report: the same numbers."""
    config_one, run_one = study
    run_two = tmp_path / "run"
    config = write_config(tmp_path / "study.yaml", tiny_config(demo_assets, run_two))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    listing = subprocess.run(
        [sys.executable, "-m", "llmdiet.cli", "study", "--config", str(config), "--list"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    jobs = [line.split()[0] for line in listing.splitlines()[1:]]
    assert "quantize/alpha-0.5+dynamic-int8" in listing and "alpha-0+dynamic-int8" not in listing
    assert all(line.split()[1] == "pending" for line in listing.splitlines()[1:])
    for kind in ("train/", "quantize/", "eval/", "bits/"):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "llmdiet.cli",
                "study",
                "--config",
                str(config),
                "--job",
                *[j for j in jobs if j.startswith(kind)],
            ],
            env=env,
            check=True,
            capture_output=True,
        )
    assert cli.main(["study", "--config", str(config), "--report"]) == 0
    one, two = (json.loads((r / "study_results.json").read_text()) for r in (run_one, run_two))
    assert one["fingerprints"] == two["fingerprints"]
    for label in one["models"]:
        for set_name, entry in one["models"][label]["sets"].items():
            other = two["models"][label]["sets"][set_name]
            assert {k: entry[k] for k in ("bleu", "chrf", "rougeL", "bleu_ci", "chrf_ci")} == {
                k: other[k] for k in ("bleu", "chrf", "rougeL", "bleu_ci", "chrf_ci")
            }
    assert one["decisions"] == two["decisions"] and one["bits"] == two["bits"]
    # the quality sections of STUDY.md are identical; only measured speed may differ
    text_one, text_two = ((r / "STUDY.md").read_text() for r in (run_one, run_two))
    for heading in ("## Bit width", "## Trained students against"):
        assert text_one.split(heading)[1].split("##")[0] == text_two.split(heading)[1].split("##")[0]


def test_a_job_needs_its_dependencies_and_unknown_jobs_are_refused(demo_assets, tmp_path, capsys):
    config = write_config(tmp_path / "s.yaml", tiny_config(demo_assets, tmp_path / "run"))
    assert cli.main(["study", "--config", str(config), "--job", "eval/alpha-0"]) == 2
    assert "needs train/alpha-0 first" in capsys.readouterr().err
    assert cli.main(["study", "--config", str(config), "--job", "eval/nobody"]) == 2
    assert "no such job" in capsys.readouterr().err


def test_changed_settings_redo_only_the_affected_jobs_and_keep_the_old_output(study, demo_assets, tmp_path):
    config, run = study
    changed = write_config(tmp_path / "changed.yaml", tiny_config(demo_assets, run, eval={"max_new_tokens": 20}))
    plan = build_plan(load_study_config(changed))
    states = {name: status(plan, name) for name in plan.jobs}
    # the evaluations, the bit sweeps and the speed rounds decode with max_new_tokens; training and quantization do not
    redo = {n for n in plan.jobs if n.startswith(("eval/", "bits/")) or n == "speed"}
    assert {n for n, s in states.items() if s == "stale"} == redo
    assert all(states[n] == "done" for n in plan.jobs if n not in redo)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"alphas": [0, 1.5]}, "alphas: expected a list of numbers in [0, 1]"),
        ({"eval": {"batch_size": 0}}, "eval: batch_size must be >= 1, got 0"),
        ({"eval": {"bach_size": 4}}, "eval: unknown key(s) ['bach_size']"),
        ({"quantize": {"methods": ["int3-magic"]}}, "quantize: methods: unknown ['int3-magic']"),
        ({"bit_sweep": {"models": ["alpha-0.9"]}}, "bit_sweep.models: unknown ['alpha-0.9']"),
        ({"statistics": {"paired_test": "t"}}, "statistics: paired_test: expected bs or ar"),
        ({"statistics": {"seed": 0}}, "statistics: seed: 0 is not a usable seed (sacreBLEU treats 0 as unseeded)"),
        ({"verdict": {"margin": {"bleu": -1}}}, "verdict: margin.bleu: expected a number >= 0"),
        ({"verdict": {"minimise": "price"}}, "verdict: minimise: expected one of size, latency, throughput, memory"),
        ({"eval": {"speed_repeats": 1}}, "eval: speed_repeats must be >= 3, got 1"),
        (
            {"distill": {"eval_start": 1000}},
            "selection would use test rows: the dev rows [1000, 1200) are test rows of demo-en-fr (rows 1000-1199)",
        ),
        ({"eval": {"dev": "demo-en-fr"}}, "eval.dev demo-en-fr is also a test set"),
        ({"alphas": [0.1, 0.1000001]}, "give the same student name twice (alpha-0.1)"),
        ({"alphas": [True]}, "alphas: expected a list of numbers in [0, 1] (not true/false)"),
        ({"methods": {"teacher": {"alpha": 0.5}}}, "methods: name 'teacher' is reserved"),
        ({"methods": {"student-vanilla": {"alpha": 0.5}}}, "methods: name 'student-vanilla' is reserved"),
        (
            {"methods": {"pair": {"method": "dml"}, "pair-b": {"alpha": 0.5}}},
            "collides with a student of the dml method",
        ),
        ({"eval": {"batch_size": "abc"}}, "eval.batch_size: expected an integer, got 'abc'"),
        ({"statistics": {"n_bootstrap": True}}, "statistics.n_bootstrap: expected an integer, got True"),
        ({"teacher": "/nonexistent/teacher"}, "teacher: /nonexistent/teacher does not exist"),
        ({"student": "/"}, "student: / has no config.json"),
        ({"quantize": {"calibration_file": "/nonexistent.tsv"}}, "calibration_file: /nonexistent.tsv does not exist"),
        ({"eval": {"device": "tpu"}}, "eval: device: expected cpu, cuda or cuda:N, got 'tpu'"),
        ({"eval": {"draft": "alpha-0.3"}}, "eval.draft: 'alpha-0.3' is not a trained student (trained: alpha-0,"),
        (
            {"distill": {"temp": 4}},
            "settings of student 'alpha-0': unknown option(s) ['temp']",
        ),  # no abbreviation of --temperature
        ({"colour": "blue"}, "unknown key(s) ['colour']"),
    ],
)
def test_bad_config_is_one_line_naming_file_and_key(demo_assets, tmp_path, capsys, change, message):
    config = tiny_config(demo_assets, tmp_path / "run")
    for key, value in change.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) and key in config else value
    path = write_config(tmp_path / "bad.yaml", config)
    assert cli.main(["study", "--config", str(path), "--list"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"llmdiet study: error: {path}") and message in err and "\n" not in err


def test_duplicate_yaml_keys_and_directories_are_refused(demo_assets, tmp_path, capsys):
    path = tmp_path / "dup.yaml"
    path.write_text(yaml.safe_dump(tiny_config(demo_assets, tmp_path / "run")) + "alphas: [0.5]\n")
    assert cli.main(["study", "--config", str(path), "--list"]) == 2
    err = capsys.readouterr().err.strip()
    assert "duplicate key 'alphas'" in err and "\n" not in err
    assert cli.main(["study", "--config", str(tmp_path), "--list"]) == 2
    assert "is a directory, not a YAML config file" in capsys.readouterr().err


def test_shipped_configs_parse_and_plan_the_reference_study():
    cfg = load_study_config(ROOT / "recipes" / "configs" / "reference.yaml")
    assert (cfg.teacher, cfg.student) == ("google/flan-t5-large", "google/flan-t5-small")
    assert cfg.alphas == [0, 0.25, 0.5, 0.75, 1] and cfg.eval.in_domain == ["pgv-en-fr"]
    assert cfg.eval.out_of_domain == ["pgv-fr-en", "opus100-ko-en"]
    assert (cfg.distill["train_rows"], cfg.distill["eval_start"], cfg.distill["eval_rows"]) == (10000, 12000, 1000)
    assert cfg.eval.dev == "pgv-en-fr-dev" and cfg.verdict.margin == {"bleu": 1.0, "chrf": 0.5}
    demo = load_study_config(ROOT / "recipes" / "configs" / "demo.yaml")
    assert demo.demo and demo.eval.out_of_domain == ["demo-fr-en", "demo-ko-en"]


def test_pareto_front():
    pts = [(1.0, 50.0, "a"), (2.0, 40.0, "b"), (3.0, 60.0, "c"), (0.5, 10.0, "d"), (3.0, 55.0, "e")]
    assert pareto_front(pts) == ["d", "a", "c"]
    assert pareto_front([(10.0, 50.0, "fast"), (5.0, 60.0, "slow")], lower_cost_better=False) == ["fast", "slow"]


def test_the_answer_never_reads_inconclusive_as_as_good():
    """The old rule accepted any model not significantly worse (a -6.43 BLEU model with CI [-13.96, +1.20] won);
    now only non-inferior models are candidates, the objective decides among them, near-ties go to dev BLEU."""
    from llmdiet.study.markdown import answer

    def model(label, role, bleu, size, base=None, method=None, dev=None):
        return {
            "label": label,
            "role": role,
            "base": base or label,
            "method": method,
            "alpha": 0.5,
            "distill_method": "kd",
            "size_mb": size,
            "size_x": 10.0 / size,
            "sets": {"in": {"bleu": bleu, "chrf": bleu}, "dev": {"bleu": dev if dev is not None else bleu}},
        }

    def decision(label, delta, low, high):
        t = {"delta": delta, "low": low, "high": high, "margin": 1.0}
        return {"label": label, "tests": {"in/bleu": t, "in/chrf": t}, "sentences_needed": 5000}

    rule = {
        "sets": ["in"],
        "margins": {"bleu": 1.0, "chrf": 0.5},
        "confidence": 0.95,
        "alpha": 0.05,
        "candidates": 4,
        "interval_level": 0.975,
        "n_resamples": 10000,
        "seed": 12345,
    }
    data = {
        "study": {
            "in_domain": ["in"],
            "out_of_domain": [],
            "dev": "dev",
            "verdict": {"minimise": "size", "tie": 0.02, "require_out_of_domain": False},
        },
        "models": {
            "teacher": model("teacher", "teacher", 40.0, 10.0),
            "student-vanilla": model("student-vanilla", "vanilla", 30.0, 1.0),
            "alpha-1+int8": model("alpha-1+int8", "quantized", 33.6, 1.000006, "alpha-1", "int8"),
            "teacher+int8": model("teacher+int8", "quantized", 39.9, 2.5, "teacher", "int8", dev=41.0),
            "teacher+int8b": model("teacher+int8b", "quantized", 39.8, 2.49, "teacher", "int8b", dev=40.0),
        },
        "decisions": {
            "teacher": {
                "rule": rule,
                "models": {
                    "alpha-1+int8": decision("inconclusive", -6.43, -13.96, 1.20),
                    "student-vanilla": decision("inferior", -10.0, -12.0, -8.0),
                    "teacher+int8": decision("non-inferior", -0.1, -0.6, 0.4),
                    "teacher+int8b": decision("non-inferior", -0.2, -0.7, 0.3),
                },
            },
            "out_of_domain": {},
            "vanilla": {},
        },
    }
    data["study"]["out_of_domain"] = ["ood"]
    data["decisions"]["out_of_domain"] = {
        "ood": {
            "models": {
                "teacher+int8": {
                    "label": "inferior",
                    "tests": {"ood/bleu": {"delta": -7.5, "low": -9.0, "high": -6.0, "margin": 1.0}},
                }
            }
        }
    }
    text = " ".join(answer(data))
    assert "ood ΔBLEU -7.50 [-9.00, -6.00] **beyond the margin**" in text  # out of domain is stated, flagged
    assert "**Answer for this study: quantize: `teacher+int8`**" in text  # 2.49 vs 2.5 MB is a tie: dev BLEU wins
    assert "Tied on size with `teacher+int8b`" in text and "alpha-1+int8" not in text.split("**Answer")[1]
    assert "non-inferior" in text and "Holm" in text and "BLEU 1" in text
    for d in data["decisions"]["teacher"]["models"].values():
        if d["label"] == "non-inferior":
            d["label"] = "inconclusive"
    text = " ".join(answer(data))
    assert "no compressed model is shown non-inferior" in text and "≈5,000" in text


def test_the_answer_covers_every_declared_set_and_gives_the_in_domain_answer_beside_it():
    """Before: the chosen model lost 61-74 BLEU out of domain and the answer still read 'as good as the teacher'
    (require_out_of_domain defaulted to false). Now every declared set decides by default; the in-domain-only
    answer is printed beside it, so the cost of forgetting is one line."""
    from llmdiet.study.config import VerdictSettings
    from llmdiet.study.markdown import answer, verdict_table

    assert VerdictSettings().require_out_of_domain is True

    def model(label, role, size, base=None, method=None):
        sets = {"in": {"bleu": 40.0, "chrf": 60.0}, "in2": {"bleu": 30.0, "chrf": 50.0}, "ood": {"bleu": 20.0}}
        return {
            "label": label,
            "role": role,
            "base": base or label,
            "method": method,
            "size_mb": size,
            "size_x": 10.0 / size,
            "sets": {**sets, "dev": {"bleu": 41.0}},
            "alpha": 0.5,
            "distill_method": "kd",
        }

    def test(delta):
        return {"delta": delta, "low": delta - 0.5, "high": delta + 0.5, "margin": 1.0}

    def decision(label, ood_delta=None):
        tests = {f"{s}/{m}": test(-0.1) for s in ("in", "in2") for m in ("bleu", "chrf")}
        if ood_delta is not None:
            tests |= {"ood/bleu": test(ood_delta), "ood/chrf": test(ood_delta)}
        return {"label": label, "tests": tests}

    rule = {
        "margins": {"bleu": 1.0, "chrf": 0.5},
        "confidence": 0.95,
        "alpha": 0.05,
        "candidates": 2,
        "interval_level": 0.975,
        "n_resamples": 10000,
        "seed": 12345,
    }
    data = {
        "study": {
            "in_domain": ["in", "in2"],
            "out_of_domain": ["ood"],
            "dev": "dev",
            "verdict": {"minimise": "size", "tie": 0.02, "require_out_of_domain": True},
        },
        "models": {
            "teacher": model("teacher", "teacher", 10.0),
            "teacher+int8": model("teacher+int8", "quantized", 2.5, "teacher", "int8"),
            "alpha-0.5": model("alpha-0.5", "student", 1.0),
        },
        "decisions": {
            "teacher": {
                "rule": {**rule, "sets": ["in", "in2", "ood"]},
                "models": {"teacher+int8": decision("non-inferior", -0.2), "alpha-0.5": decision("inferior", -60.0)},
            },
            "teacher_other_rule": {
                "rule": {**rule, "sets": ["in", "in2"]},
                "models": {"teacher+int8": decision("non-inferior"), "alpha-0.5": decision("non-inferior")},
            },
            "out_of_domain": {
                "ood": {
                    "models": {
                        "teacher+int8": {"label": "non-inferior", "tests": {"ood/bleu": test(-0.2)}},
                        "alpha-0.5": {"label": "inferior", "tests": {"ood/bleu": test(-60.0)}},
                    }
                }
            },
            "vanilla": {},
        },
    }
    lines = answer(data)
    assert (
        "on every declared set (in, in2, ood)" in lines[0] and "Holm-adjusted over all 2 candidate models" in lines[0]
    )
    assert lines[-2].startswith("**Answer for this study: quantize: `teacher+int8`**")
    assert "on in2" in lines[-2]  # every in-domain set's delta, not only the first one's
    assert lines[-1].startswith("**Beside it, deciding on the in-domain sets only: distill: `alpha-0.5`**")
    assert (
        "ood ΔBLEU -60.00 [-60.50, -59.50] **beyond the margin**" in lines[-1] and "not part of this rule" in lines[-1]
    )
    table = verdict_table(data)
    assert "verdict (every declared set)" in table and "verdict (the in-domain sets only)" in table
    assert "ΔBLEU in2" in table and "ΔchrF in2" in table


def test_demo_pretraining_never_sees_an_eval_sentence():
    """Content, not row numbers: corpus v3 had 98/200 demo-fr-en references and 83/200 demo-ko-en references among
    the pretraining targets of the other directions, and 273/600 demo-en-fr sources as ko->en training targets."""
    from llmdiet.evaluation.overlap import normalize_text

    seen = {normalize_text(t) for source, target in pretraining_rows() for t in (source.split(": ", 1)[1], target)}
    assert len(pretraining_rows()) == 3 * DEMO_TRAIN_ROWS
    for name in ("demo-en-fr", "demo-fr-en", "demo-ko-en", "demo-en-fr-dev"):
        rows = resolve_eval_set(name).load()
        texts = {normalize_text(t) for r in rows for t in (r.source, r.target)}
        assert not texts & seen, (name, sorted(texts & seen)[:3])
    # and the held-out sets are disjoint from one another
    held = [{normalize_text(r.target) for r in resolve_eval_set(n).load()} for n in ("demo-fr-en", "demo-ko-en")]
    assert not held[0] & held[1]
    assert DEMO_EN_FR.exists() and DEMO_KO_EN.exists()


def test_training_job_resumes_after_a_kill(demo_assets, tmp_path):
    """Killed during training (after a checkpoint), the re-run finishes from the checkpoint with the same student."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    one = write_config(tmp_path / "one.yaml", tiny_config(demo_assets, tmp_path / "one", alphas=[0.5]))
    two = write_config(tmp_path / "two.yaml", tiny_config(demo_assets, tmp_path / "two", alphas=[0.5]))
    job = ["--job", "train/alpha-0.5"]
    subprocess.run(
        [sys.executable, "-m", "llmdiet.cli", "study", "--config", str(one), *job],
        env=env,
        check=True,
        capture_output=True,
    )
    # the interrupted run: stopped right after its first checkpoint (step 4 of 8) by a kill from a Trainer callback
    code = (
        "import os, signal, sys, transformers\n"
        "orig = transformers.Trainer._save_checkpoint\n"
        "def save_then_die(self, *a, **k):\n"
        "    orig(self, *a, **k)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "transformers.Trainer._save_checkpoint = save_then_die\n"
        "from llmdiet.cli import main\n"
        f"sys.exit(main(['study', '--config', {str(two)!r}, '--job', 'train/alpha-0.5']))\n"
    )
    killed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True)
    assert killed.returncode == -9
    plan = build_plan(load_study_config(two))
    assert status(plan, "train/alpha-0.5") == "interrupted"
    assert (tmp_path / "two" / "students" / "alpha-0.5" / "checkpoint-4").is_dir()
    subprocess.run(
        [sys.executable, "-m", "llmdiet.cli", "study", "--config", str(two), *job],
        env=env,
        check=True,
        capture_output=True,
    )
    assert status(plan, "train/alpha-0.5") == "done"
    from safetensors.torch import load_file

    a = load_file(tmp_path / "one" / "students" / "alpha-0.5" / "model.safetensors")
    b = load_file(tmp_path / "two" / "students" / "alpha-0.5" / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    log = json.loads((tmp_path / "two" / "students" / "alpha-0.5" / "training_log.json").read_text())
    assert log["global_step"] == 8


def test_the_shared_teacher_cache_serves_fixed_target_students_only():
    from llmdiet.study.fingerprints import distill_options

    cfg = load_study_config(ROOT / "recipes" / "configs" / "demo.yaml")
    assert cfg.distill["teacher_cache"] == "teacher-topk"
    for overrides, uses_cache in (
        ({"alpha": 0.5}, True),
        ({"method": "dkd"}, True),
        ({"divergence": "jsd"}, True),
        ({"method": "gkd"}, False),
        ({"method": "dml"}, False),
        ({"student_init": "copy_layers", "hidden_weight": 1.0}, False),
    ):
        _, options = distill_options(cfg, overrides, "out")
        assert ("teacher_cache" in options) == uses_cache, overrides


def test_damaged_outputs_are_redone_and_running_jobs_are_told_apart(study, tmp_path, capsys):
    """Deleting or hand-editing a finished job's output gave a traceback in --report and a re-run trusted the
    done marker; a job running in another process was listed as interrupted."""
    import shutil

    from llmdiet.locking import directory_lock
    from llmdiet.study.runners import run_job
    from llmdiet.study.state import lock_dir, marker_path

    config, run = study
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns(".llmdiet.lock"))
    data = yaml.safe_load(Path(config).read_text())
    moved = write_config(tmp_path / "study.yaml", {**data, "study_dir": str(copy)})
    plan = build_plan(load_study_config(moved))
    assert status(plan, "eval/teacher") == "done"
    results = copy / "eval" / "teacher" / "results.json"
    edited = json.loads(results.read_text())
    edited["sets"]["demo-en-fr"]["metrics"]["bleu"] = 99.99
    results.write_text(json.dumps(edited))
    (copy / "eval" / "alpha-0" / "demo-en-fr" / "samples.jsonl").unlink()
    assert status(plan, "eval/teacher") == "damaged" and status(plan, "eval/alpha-0") == "damaged"
    assert cli.main(["study", "--config", str(moved), "--report"]) == 0  # no traceback; the two are missing
    text = (copy / "STUDY.md").read_text()
    assert "eval/teacher" in text.split("**Incomplete:**")[1] and "99.99" not in text
    assert run_job(plan, "eval/teacher") == "ran" and status(plan, "eval/teacher") == "done"
    assert json.loads(results.read_text())["sets"]["demo-en-fr"]["metrics"]["bleu"] != 99.99
    # a job whose marker says running and whose lock another process holds is "running", not "interrupted"
    marker = json.loads(marker_path(plan, "bits/teacher").read_text())
    marker_path(plan, "bits/teacher").write_text(json.dumps({**marker, "status": "running"}))
    assert status(plan, "bits/teacher") == "interrupted"
    with directory_lock(lock_dir(plan, "bits/teacher"), "test"):
        assert status(plan, "bits/teacher") == "running"
