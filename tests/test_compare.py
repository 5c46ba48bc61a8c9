"""``llmdiet compare`` over a teacher run and a student run: table, CSV and plots."""

from __future__ import annotations

import csv
import io
import json

import pytest

from llmdiet import cli

RUN = [
    "--eval_set",
    "demo-en-fr",
    "demo-ko-en",
    "--max_eval_samples",
    "16",
    "--max-new-tokens",
    "16",
    "--batch-size",
    "8",
    "--no_progress",
]


@pytest.fixture(scope="module")
def two_runs(demo_assets, tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    for name, model in (("eval-teacher", demo_assets.teacher), ("eval-student", demo_assets.student)):
        assert cli.main(["eval", "--model", str(model), "--output_dir", str(root / name), *RUN]) == 0
    return root / "eval-teacher", root / "eval-student"


def results(run):
    return json.loads((run / "results.json").read_text())


def test_markdown_table_and_png_plots(two_runs, tmp_path, capsys):
    teacher, student = two_runs
    assert cli.main(["compare", str(teacher), str(student), "--output_dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    header, rule, *rows = out.splitlines()[:4]
    assert header.startswith(
        "| run | model | backend | size MB | demo-en-fr BLEU | demo-en-fr chrF | demo-en-fr ROUGE-L |"
    )
    assert header.endswith("| demo-en-fr sent/s | demo-ko-en sent/s | peak RSS MB |")  # per set, never pooled
    for row, run in zip(rows, (teacher, student)):
        r = results(run)
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[:3] == [run.name, r["model"]["name"], "torch-fp32"]
        assert cells[3] == f"{r['size']['disk_bytes'] / 1e6:.1f}"
        assert cells[4:7] == [f"{r['sets']['demo-en-fr']['metrics'][k]:.2f}" for k in ("bleu", "chrf", "rougeL")]
        assert cells[7] == f"{r['sets']['demo-ko-en']['metrics']['bleu']:.2f}"
        for k, name in ((10, "demo-en-fr"), (11, "demo-ko-en")):
            timing = r["sets"][name]["timing"]
            assert cells[k] == f"{timing['num_sentences'] / timing['wall_s']:.2f}"
    assert "DEMO:" in out
    for name in ("compare.md", "compare.csv", "bleu_vs_size.png", "bleu_vs_latency.png"):
        assert (tmp_path / name).stat().st_size > 0
    import matplotlib.image

    for name in ("bleu_vs_size.png", "bleu_vs_latency.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        height, width, _ = matplotlib.image.imread(tmp_path / name).shape
        assert width > 300 and height > 200


def test_csv_output_has_the_exact_numbers(two_runs, tmp_path, capsys):
    teacher, student = two_runs
    assert (
        cli.main(
            [
                "compare",
                str(teacher),
                str(student),
                "--format",
                "csv",
                "--output_dir",
                str(tmp_path),
                "--labels",
                "teacher",
                "student",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    rows = list(csv.DictReader(io.StringIO(printed)))
    assert [r["run"] for r in rows] == ["teacher", "student"]
    for row, run in zip(rows, (teacher, student)):
        r = results(run)
        assert float(row["demo-en-fr BLEU"]) == r["sets"]["demo-en-fr"]["metrics"]["bleu"]
        assert float(row["demo-ko-en ROUGE-L"]) == r["sets"]["demo-ko-en"]["metrics"]["rougeL"]
        assert float(row["size MB"]) == r["size"]["disk_bytes"] / 1e6 and row["size source"] == "disk"
        peak = max(e["timing"]["peak_rss_bytes"] for e in r["sets"].values())
        assert float(row["peak RSS MB"]) == pytest.approx(peak / 1e6)
    assert (tmp_path / "compare.csv").read_text() == printed


def test_default_output_directory_is_the_first_runs_parent(two_runs, capsys):
    teacher, student = two_runs
    assert cli.main(["compare", str(teacher), str(student)]) == 0
    assert (teacher.parent / "compare.md").read_text() == capsys.readouterr().out


def test_a_set_missing_from_one_run_shows_a_dash(two_runs, demo_assets, tmp_path, capsys):
    other = tmp_path / "ko-only"
    assert (
        cli.main(
            [
                "eval",
                "--model",
                str(demo_assets.student),
                "--output_dir",
                str(other),
                "--eval_set",
                "demo-ko-en",
                *RUN[3:],
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert cli.main(["compare", str(two_runs[0]), str(other), "--output_dir", str(tmp_path)]) == 0
    last = capsys.readouterr().out.splitlines()[3]  # header, rule, teacher, ko-only
    cells = [c.strip() for c in last.strip("|").split("|")]
    assert cells[0] == "ko-only" and cells[4:7] == ["-", "-", "-"]


def test_bad_input(two_runs, tmp_path, capsys):
    assert cli.main(["compare", str(tmp_path)]) == 2
    assert "not an llmdiet eval run directory (no results.json)" in capsys.readouterr().err
    (tmp_path / "results.json").write_text("{not json")
    assert cli.main(["compare", str(tmp_path)]) == 2
    assert "results.json: not valid JSON" in capsys.readouterr().err
    assert cli.main(["compare", str(two_runs[0]), "--labels", "a", "b"]) == 2
    assert "--labels has 2 names for 1 runs" in capsys.readouterr().err
    assert cli.main(["compare"]) == 2
    assert "give at least one eval run directory" in capsys.readouterr().err


def test_twelve_runs_get_distinct_styles_and_replacing_is_announced(two_runs, tmp_path, capsys):
    """Before: with 11 runs the colours repeated, points carried no label, and an earlier compare.* was
    overwritten without a word."""
    from llmdiet.evaluation.compare import run_style

    styles = [run_style(i) for i in range(12)]
    assert len(set(styles)) == 12 and len({c for c, _ in styles}) == 12
    teacher, student = two_runs
    assert cli.main(["compare", str(teacher), str(student), "--output_dir", str(tmp_path)]) == 0
    capsys.readouterr()
    assert cli.main(["compare", str(teacher), "--output_dir", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "replacing the earlier comparison" in err and "eval-student" in err
    assert json.loads((tmp_path / "compare.json").read_text())["runs"] == [str(teacher.resolve())]
