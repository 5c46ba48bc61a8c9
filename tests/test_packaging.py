"""A wheel (non-editable) install finds everything it needs inside the package: the named eval sets, the demo
corpus and models, the metric modules. Before, the eval sets lived in the checkout's ``eval_sets/`` and a wheel install found
none of them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_a_wheel_install_runs_the_demo_eval_from_another_directory(tmp_path):
    source = tmp_path / "source"  # a copy: building in place would leave build/ in the checkout
    for name in ("pyproject.toml", "README.md"):
        source.mkdir(exist_ok=True)
        shutil.copy(REPO / name, source / name)
    for folder in ("llmdiet", "eval_sets"):
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheels.glob("llmdiet-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "llmdiet/eval_sets/demo-en-fr.yaml" in names and "llmdiet/demo/data/demo_en_fr.jsonl" in names
    for shipped in (
        "manifest.json",
        "teacher/model.safetensors",
        "student_init/config.json",
        "tokenizer/tokenizer.json",
    ):
        assert f"llmdiet/demo/models/{shipped}" in names, shipped
    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}
    env.pop("LLMDIET_EVAL_SETS", None)
    where = subprocess.run(
        [sys.executable, "-c", "import llmdiet; print(llmdiet.__file__)"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )
    assert where.stdout.strip().startswith(str(site)), where.stdout  # the wheel's copy, not the checkout
    found = subprocess.run(
        [sys.executable, "-c", "from llmdiet.evaluation.eval_sets import known_eval_sets as k; print(sorted(k()))"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )
    assert found.stdout.strip() == str(sorted(p.stem for p in (REPO / "eval_sets").glob("*.yaml"))), found.stderr
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmdiet.cli",
            "eval",
            "--preset",
            "demo",
            "--model",
            "llmdiet-demo:teacher",  # the wheel's own shipped models, hash-checked
            "--max_eval_samples",
            "8",
            "--output_dir",
            "eval",
        ],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((elsewhere / "eval" / "results.json").read_text())
    assert sorted(results["sets"]) == ["demo-en-fr", "demo-fr-en", "demo-ko-en"]
    assert all(s["num_samples"] == 8 for s in results["sets"].values())
    assert results["model"]["path"].startswith(str(site))


def test_pyproject_lists_every_package():
    """pyproject.toml lists the packages by hand (eval_sets/ is mapped into the wheel as llmdiet.eval_sets): a new
    package folder must be added there, or a wheel would silently lack it."""
    import pytest

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "llmdiet").rglob("__init__.py")}
    assert listed == folders | {"llmdiet.eval_sets"}
