"""Confidence intervals and paired tests equal sacreBLEU's own command line on the same samples."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from llmdiet.demo import DEMO_EN_FR
from llmdiet.evaluation.statistics import confidence_interval, paired_significance


@pytest.fixture(scope="module")
def systems(tmp_path_factory):
    rows = [json.loads(x) for x in DEMO_EN_FR.read_text(encoding="utf-8").splitlines()][1000:1100]
    refs = [r["fr"] for r in rows]
    good = [r if i % 3 else " ".join(r.split()[:-1] + ["aujourd'hui."]) for i, r in enumerate(refs)]
    bad = [" ".join(r.split()[:-2]) or r for r in refs]
    root = tmp_path_factory.mktemp("sys")
    for name, lines in (("ref", refs), ("good", good), ("bad", bad)):
        (root / f"{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root, refs, good, bad


def _cli(*args, env_seed="12345"):
    import os

    env = {**os.environ, "SACREBLEU_SEED": env_seed}
    return subprocess.run(
        [sys.executable, "-m", "sacrebleu", *map(str, args)], capture_output=True, text=True, env=env, check=True
    ).stdout


def test_confidence_interval_equals_sacrebleu_cli(systems):
    root, refs, good, _ = systems
    for metric in ("bleu", "chrf"):
        ours = confidence_interval(good, refs, metric, n_bootstrap=200, seed=7)
        out = _cli(
            root / "ref.txt",
            "-i",
            root / "good.txt",
            "-m",
            metric,
            "--confidence",
            "--confidence-n",
            "200",
            "-f",
            "text",
            env_seed="7",
        )
        # e.g. "BLEU|nrefs:1|bs:200|seed:7|... = 80.43 (μ = 80.36 ± 2.85) ..."
        score, mean, ci = re.search(r"= ([0-9.]+) \(μ = ([0-9.]+) ± ([0-9.]+)\)", out).groups()
        assert ours["score"] == pytest.approx(float(score), abs=0.051)  # chrF is printed to 0.1
        assert ours["mean"] == pytest.approx(float(mean), abs=0.051)  # printed to 0.1 for chrF
        # the same resamples (mean equal); our bounds are percentiles, the CLI's the mean +- half their distance
        assert (ours["high"] - ours["low"]) / 2 == pytest.approx(float(ci), abs=0.1)
        assert ours["low"] < ours["score"] < ours["high"] and ours["n_bootstrap"] == 200 and ours["seed"] == 7


def test_paired_test_equals_sacrebleu_cli(systems):
    root, refs, good, bad = systems
    ours = paired_significance(("good", good), [("bad", bad)], refs, test="bs", n_samples=300, seed=3)
    out = _cli(
        root / "ref.txt",
        "-i",
        root / "good.txt",
        root / "bad.txt",
        "-m",
        "bleu",
        "chrf",
        "--paired-bs",
        "--paired-bs-n",
        "300",
        "-f",
        "text",
        env_seed="3",
    )
    # the CLI's table: the second system's row carries its p-value per metric, e.g. "(p = 0.0033)*"
    p_values = [float(x) for x in re.findall(r"p = ([0-9.]+)", out)]
    assert len(p_values) == 2
    assert ours["bad"]["bleu"]["p_value"] == pytest.approx(p_values[0], abs=1e-4)
    assert ours["bad"]["chrf"]["p_value"] == pytest.approx(p_values[1], abs=1e-4)
    assert ours["bad"]["bleu"]["delta"] < 0 and ours["bad"]["bleu"]["significant"]
    same = paired_significance(("good", good), [("copy", list(good))], refs, test="ar", n_samples=200, seed=3)
    # sacreBLEU itself gives p = 1/(n+1) for a delta of exactly 0; no difference is reported as not significant
    assert same["copy"]["bleu"]["delta"] == 0 and not same["copy"]["bleu"]["significant"]
    assert same["copy"]["bleu"]["p_value"] == 1.0
