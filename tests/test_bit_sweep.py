"""The 2-8-bit sweep on the demo teacher: GPFQ beats RTN at 3 bits, points are resumable, plots are written."""

import json

from llmdiet.demo import DEMO_EN_FR
from llmdiet.study.bit_sweep import BitSweepArguments, run_sweep


def test_sweep_scores_resumes_and_plots(demo_assets, tmp_path):
    args = BitSweepArguments(
        models=[str(demo_assets.teacher)],
        bits=[2],
        methods=["rtn", "gpfq"],
        eval_set="demo-en-fr",
        max_eval_samples=64,
        calibration_file=str(DEMO_EN_FR),
        max_calibration_samples=64,
        max_new_tokens=32,
        output_dir=str(tmp_path / "sweep"),
    )
    summary = run_sweep(args)
    points = {p["method"]: p for p in summary["points"]}
    assert set(points) == {"float", "rtn", "gpfq"}
    assert points["float"]["bleu"] > 60  # the demo teacher knows its templates (ambiguous references: not 100)
    assert points["gpfq"]["bleu"] > points["rtn"]["bleu"] + 10  # 2 bits: 73.9 vs 0.1 on 200 rows (demo study)
    assert points["gpfq"]["packed_bytes"] < 0.3 * points["float"]["packed_bytes"]
    assert "tok:13a" in points["gpfq"]["bleu_signature"]
    for name in ("bit_sweep.json", "bit_sweep.md", "bleu_vs_bits.png", "bleu_vs_packed_size.png"):
        assert (tmp_path / "sweep" / name).stat().st_size > 0
    # Kill after two points (torn third line): the re-run computes only the missing point.
    lines = (tmp_path / "sweep" / "points.jsonl").read_text().splitlines()
    (tmp_path / "sweep" / "points.jsonl").write_text("\n".join(lines[:2]) + '\n{"model": "x", "bi')
    again = run_sweep(args)
    assert {p["method"]: p["bleu"] for p in again["points"]} == {m: p["bleu"] for m, p in points.items()}
    new_lines = (tmp_path / "sweep" / "points.jsonl").read_text().splitlines()
    assert len(new_lines) == 3  # the two kept points + the recomputed one; the torn line is gone
    assert [json.loads(x)["method"] for x in new_lines[:2]] == [json.loads(x)["method"] for x in lines[:2]]


def test_methods_list_matches_the_quantizer():
    from llmdiet.quantize.lowbit import METHODS
    from llmdiet.study import bit_sweep

    assert bit_sweep.METHODS == METHODS


def test_points_of_other_settings_are_not_reused(demo_assets, tmp_path):
    """Before: points were keyed by (model name, method, bits) only: another model at the same path, eval rows
    or GPFQ scale silently reused old points."""
    import pytest

    from llmdiet.config import ConfigError

    args = BitSweepArguments(
        models=[str(demo_assets.teacher)],
        bits=[4],
        methods=["rtn"],
        eval_set="demo-en-fr",
        max_eval_samples=8,
        max_new_tokens=16,
        output_dir=str(tmp_path / "sweep"),
    )
    run_sweep(args)
    args.max_eval_samples = 12
    with pytest.raises(ConfigError, match=r"changed: limit \(8 -> 12\)"):
        run_sweep(args)
    args.max_eval_samples, args.scale = 8, 1.3
    with pytest.raises(ConfigError, match="scale"):
        run_sweep(args)
