"""``llmdiet quantize``: the command line, auto-detection by ``llmdiet eval``, and clear errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from llmdiet import cli
from llmdiet.demo import DEMO_EN_FR
from llmdiet.engines import ARTIFACT_FILE, load_backend

from conftest import needs_onnx
from quantize_helpers import EVAL_ROWS, GREEDY, demo_rows


def run_cli(*args) -> int:
    return cli.main(["quantize", *map(str, args)])


def test_quantize_then_eval_auto_detects_the_backend(demo_assets, tmp_path, capsys):
    out = tmp_path / "q-{method}"
    assert run_cli("--model", demo_assets.teacher, "--method", "ct2-int8", "--output_dir", out) == 0
    written = tmp_path / "q-ct2-int8"  # '{method}' in --output_dir is replaced
    meta = json.loads((written / ARTIFACT_FILE).read_text())
    assert meta["method"] == "ct2-int8" and meta["provenance"]["command"].startswith("llmdiet quantize --model")
    printed = capsys.readouterr().out
    assert f"llmdiet eval --model {written} --eval_set" in printed
    backend = load_backend("auto", str(written))
    sources, references = demo_rows(EVAL_ROWS[0], EVAL_ROWS[0] + 8)
    hypotheses = [t.hypothesis for t in backend.translate(sources, GREEDY)]
    # the demo teacher knows its domain (ambiguous references; its training differs a little from CPU to CPU: its
    # fp32 outputs score 43.6 on these 8 rows on an AVX-512 AMD EPYC with transformers 5.24; untrained: about 0)
    import sacrebleu

    assert sacrebleu.corpus_bleu(hypotheses, [references]).score > 25


def test_list_methods(capsys):
    assert run_cli("--list_methods") == 0
    table = capsys.readouterr().out
    for method in ("dynamic-int8", "onnx-static-int8", "ct2-int8", "quanto-int8", "torchao-int8", "torch-bf16"):
        assert method in table


def test_unknown_method_lists_the_methods(demo_assets, tmp_path, capsys):
    assert run_cli("--model", demo_assets.teacher, "--method", "int4-magic", "--output_dir", tmp_path / "x") == 2
    err = capsys.readouterr().err
    assert (
        "unknown --method 'int4-magic'" in err
        and "dynamic-int8" in err
        and "usable with the installed libraries" in err
    )
    assert not (tmp_path / "x").exists()


def test_method_whose_library_is_missing(demo_assets, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ctranslate2", None)  # as if ctranslate2 were not installed
    assert run_cli("--model", demo_assets.teacher, "--method", "ct2-int8", "--output_dir", tmp_path / "x") == 2
    err = capsys.readouterr().err
    assert "method 'ct2-int8' needs ctranslate2, which is not installed" in err and "dynamic-int8" in err


def test_calibration_with_zero_usable_rows(demo_assets, tmp_path, capsys):
    bad = tmp_path / "cal.jsonl"
    bad.write_text('{"en": "   ", "fr": "x"}\n{"en": "", "fr": "y"}\n', encoding="utf-8")
    code = run_cli(
        "--model",
        demo_assets.teacher,
        "--method",
        "quanto-int8",
        "--output_dir",
        tmp_path / "x",
        "--calibration_file",
        bad,
        "--skip_bad_rows",
    )
    assert code == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "zero usable rows" in err
    assert not (tmp_path / "x").exists()


def test_calibration_rows_out_of_range(demo_assets, tmp_path, capsys):
    code = run_cli(
        "--model",
        demo_assets.teacher,
        "--method",
        "quanto-int8",
        "--output_dir",
        tmp_path / "x",
        "--calibration_file",
        DEMO_EN_FR,
        "--calibration_start",
        5000,
    )
    assert code == 2
    assert "zero usable rows in rows [5000, 5128)" in capsys.readouterr().err


def test_calibration_count_must_be_positive(demo_assets, tmp_path, capsys):
    code = run_cli(
        "--model",
        demo_assets.teacher,
        "--method",
        "quanto-int8",
        "--output_dir",
        tmp_path / "x",
        "--max_calibration_samples",
        0,
    )
    assert code == 2 and "--max_calibration_samples must be >= 1" in capsys.readouterr().err


def test_offline_hub_calibration_set_fails_clearly(demo_assets, tmp_path, capsys):
    code = run_cli("--model", demo_assets.teacher, "--method", "quanto-int8", "--output_dir", tmp_path / "x")
    assert code == 2
    err = capsys.readouterr().err
    assert "cannot load dataset 'Nicolas-BZRD/Parallel_Global_Voices_English_French'" in err
    assert "--calibration_file FILE" in err and not (tmp_path / "x").exists()


def test_refuses_to_overwrite_without_flag(demo_assets, tmp_path, capsys):
    out = tmp_path / "q"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert run_cli("--model", demo_assets.teacher, "--method", "torch-bf16", "--output_dir", out) == 2
    assert "not an llmdiet artifact" in capsys.readouterr().err and (out / "keep.txt").exists()
    # --overwrite_output_dir only ever replaces an earlier artifact, never a directory llmdiet did not write
    assert (
        run_cli("--model", demo_assets.teacher, "--method", "torch-bf16", "--output_dir", out, "--overwrite_output_dir")
        == 2
    )
    assert "refusing to replace it" in capsys.readouterr().err and (out / "keep.txt").exists()
    artifact = tmp_path / "artifact"
    assert run_cli("--model", demo_assets.teacher, "--method", "torch-bf16", "--output_dir", artifact) == 0
    assert (
        run_cli(
            "--model",
            demo_assets.teacher,
            "--method",
            "dynamic-int8",
            "--output_dir",
            artifact,
            "--overwrite_output_dir",
        )
        == 0
    )
    assert json.loads((artifact / ARTIFACT_FILE).read_text())["method"] == "dynamic-int8"
    assert not (artifact / "model.safetensors").exists()  # nothing of the bf16 artifact is left


def test_cuda_without_a_gpu_and_cpu_only_methods(demo_assets, tmp_path, capsys):
    import torch

    assert (
        run_cli(
            "--model",
            demo_assets.teacher,
            "--method",
            "dynamic-int8",
            "--output_dir",
            tmp_path / "x",
            "--device",
            "cuda",
        )
        == 2
    )
    assert "quantizes on cpu only" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert (
            run_cli(
                "--model",
                demo_assets.teacher,
                "--method",
                "torchao-int8",
                "--output_dir",
                tmp_path / "x",
                "--device",
                "cuda",
            )
            == 2
        )
        assert "CUDA is not available" in capsys.readouterr().err


def test_not_a_seq2seq_model(tmp_path, capsys):
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(tmp_path / "gpt2")
    assert run_cli("--model", tmp_path / "gpt2", "--method", "dynamic-int8", "--output_dir", tmp_path / "x") == 2
    assert "not a sequence-to-sequence" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_backend_refuses_a_mismatched_artifact(demo_assets, tmp_path):
    from llmdiet.engines import BackendError

    assert run_cli("--model", demo_assets.teacher, "--method", "torchao-int8", "--output_dir", tmp_path / "ao") == 0
    with pytest.raises(BackendError, match="is a 'torchao-int8' artifact"):
        load_backend("dynamic-int8", str(tmp_path / "ao"))
    (tmp_path / "ao" / "model_torchao.safetensors").unlink()
    with pytest.raises(BackendError, match="weights file not found"):
        load_backend("auto", str(tmp_path / "ao"))


def test_demo_preset_defaults(monkeypatch, tmp_path):
    from llmdiet.config import parse_config
    from llmdiet.quantize.job import PRESETS, QuantizeArguments

    (args,) = parse_config([QuantizeArguments], ["--preset", "demo", "--method", "onnx-static-int8"], presets=PRESETS)
    assert args.model == "llmdiet-demo:teacher" and args.output_dir == "runs/quant-demo-{method}"
    assert (
        args.calibration_file == str(DEMO_EN_FR) and args.max_calibration_samples == 128 and args.calibration_start == 0
    )
    (args,) = parse_config([QuantizeArguments], ["--preset", "reference"], presets=PRESETS)
    assert (args.model, args.method) == ("google/flan-t5-large", "dynamic-int8")


def test_failed_or_killed_quantize_leaves_nothing_that_blocks_a_rerun(demo_assets, tmp_path, capsys, monkeypatch):
    """Before: a killed run left a half-written --output_dir (no artifact file) plus an llmdiet-onnx-* temp dir beside it;
    re-running said "pass --overwrite_output_dir", and --overwrite_output_dir said "refusing to delete it"."""
    import llmdiet.quantize.driver as quantize_driver

    out = tmp_path / "art"
    # a run killed earlier (pid 999999999 is not alive) left its partial directory
    stale = tmp_path / ".art.partial-999999999"
    (stale / "llmdiet-onnx-x").mkdir(parents=True)
    (stale / "encoder_model.onnx").write_bytes(b"half")

    def boom(*args, **kwargs):
        raise RuntimeError("simulated failure in the middle of the export")

    monkeypatch.setattr(quantize_driver, "_run_method", boom)
    with pytest.raises(RuntimeError, match="simulated failure"):
        run_cli("--model", demo_assets.teacher, "--method", "dynamic-int8", "--output_dir", out)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither --output_dir, nor the partial dirs, nor temp dirs
    monkeypatch.undo()
    assert run_cli("--model", demo_assets.teacher, "--method", "dynamic-int8", "--output_dir", out) == 0
    assert (out / ARTIFACT_FILE).is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["art"]
    assert not list(out.glob("llmdiet-onnx-*"))
    # an existing artifact: refused without --overwrite_output_dir, replaced with it
    assert run_cli("--model", demo_assets.teacher, "--method", "dynamic-int8", "--output_dir", out) == 2
    assert "already holds an artifact (pass --overwrite_output_dir" in capsys.readouterr().err
    assert (
        run_cli(
            "--model", demo_assets.teacher, "--method", "dynamic-int8", "--output_dir", out, "--overwrite_output_dir"
        )
        == 0
    )
    assert json.loads((out / ARTIFACT_FILE).read_text())["method"] == "dynamic-int8"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def test_model_without_tokenizer_names_the_tokenizer_option(demo_assets, tmp_path, capsys):
    """Before: "Either model_file or model_proto must be specified" (a traceback); there was no --tokenizer."""
    import shutil

    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors", "generation_config.json"):
        if (demo_assets.teacher / name).exists():
            shutil.copy(demo_assets.teacher / name, bare / name)
    assert run_cli("--model", bare, "--method", "dynamic-int8", "--output_dir", tmp_path / "q") == 2
    err = capsys.readouterr().err.strip()
    assert "has no usable tokenizer files" in err and "--tokenizer" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "q").exists()
    assert (
        run_cli(
            "--model",
            bare,
            "--tokenizer",
            demo_assets.tokenizer,
            "--method",
            "dynamic-int8",
            "--output_dir",
            tmp_path / "q",
        )
        == 0
    )
    rc = cli.main(
        [
            "eval",
            "--model",
            str(bare),
            "--eval_set",
            "demo-en-fr",
            "--max_eval_samples",
            "4",
            "--max-new-tokens",
            "8",
            "--output_dir",
            str(tmp_path / "ev"),
            "--no_progress",
        ]
    )
    assert rc == 2 and "--tokenizer" in capsys.readouterr().err
    rc = cli.main(
        [
            "eval",
            "--model",
            str(bare),
            "--tokenizer",
            str(demo_assets.tokenizer),
            "--eval_set",
            "demo-en-fr",
            "--max_eval_samples",
            "4",
            "--max-new-tokens",
            "8",
            "--output_dir",
            str(tmp_path / "ev"),
            "--no_progress",
        ]
    )
    assert rc == 0


def test_truncated_weights_file_is_one_line(demo_assets, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(demo_assets.teacher, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert run_cli("--model", broken, "--method", "dynamic-int8", "--output_dir", tmp_path / "q") == 2
    err = capsys.readouterr().err.strip()
    assert "cannot load the weights of" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "method,engine_file",
    [
        ("ct2-int8", "model.bin"),
        ("dynamic-int8", "model_int8.safetensors"),
        pytest.param("onnx-fp32", "decoder_model_merged.onnx", marks=needs_onnx),
    ],
)
def test_artifact_with_missing_or_truncated_engine_file_is_one_line(demo_assets, tmp_path, capsys, method, engine_file):
    out = tmp_path / method
    assert run_cli("--model", demo_assets.teacher, "--method", method, "--output_dir", out) == 0
    path = next(out.glob(engine_file.replace("model_int8", "*")), out / engine_file)
    for damage in ("truncate", "delete"):
        if damage == "truncate":
            path.write_bytes(path.read_bytes()[:100])
        else:
            path.unlink()
        capsys.readouterr()
        rc = cli.main(
            [
                "eval",
                "--model",
                str(out),
                "--eval_set",
                "demo-en-fr",
                "--max_eval_samples",
                "2",
                "--max-new-tokens",
                "4",
                "--output_dir",
                str(tmp_path / f"ev-{damage}"),
                "--no_progress",
            ]
        )
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and str(out) in err, (damage, err)


def test_overwrite_keeps_the_users_files_and_concurrent_runs_are_refused(demo_assets, tmp_path, capsys):
    """--overwrite_output_dir deleted notes.txt and my-eval/results.json inside an artifact without a word; two concurrent
    runs into one --output_dir both said "wrote ..." and the directory held only the later method."""
    from llmdiet.locking import file_lock

    out = tmp_path / "int8"
    assert run_cli("--model", demo_assets.teacher, "--method", "dynamic-int8", "--output_dir", out) == 0
    meta = json.loads((out / ARTIFACT_FILE).read_text())
    assert "model_int8.safetensors" in meta["files"]  # the manifest of what llmdiet wrote
    (out / "notes.txt").write_text("mine")
    (out / "my-eval").mkdir()
    (out / "my-eval" / "results.json").write_text("{}")
    capsys.readouterr()
    assert (
        run_cli(
            "--model", demo_assets.teacher, "--method", "dynamic-int8", "--output_dir", out, "--overwrite_output_dir"
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "my-eval/results.json, notes.txt" in err and "move them out first" in err and "\n" not in err.strip()
    assert (out / "notes.txt").read_text() == "mine" and (out / "my-eval" / "results.json").exists()
    (out / "notes.txt").unlink()
    (out / "my-eval" / "results.json").unlink()
    (out / "my-eval").rmdir()
    with file_lock(out.parent / f".{out.name}.lock", "llmdiet quantize", shown=out):  # another run holds --output_dir
        assert (
            run_cli(
                "--model", demo_assets.teacher, "--method", "torch-bf16", "--output_dir", out, "--overwrite_output_dir"
            )
            == 2
        )
    assert "is in use by a running llmdiet quantize" in capsys.readouterr().err
    assert json.loads((out / ARTIFACT_FILE).read_text())["method"] == "dynamic-int8"
    assert (
        run_cli("--model", demo_assets.teacher, "--method", "torch-bf16", "--output_dir", out, "--overwrite_output_dir")
        == 0
    )


def test_temporary_files_of_a_quantization_stay_in_its_partial_directory(tmp_path):
    """A SIGKILLed onnx-static-int8 left its export directory in /tmp (1.5 MB each time): every temporary file of
    a method now goes under the run's partial directory, which the next run removes."""
    import os
    import tempfile

    from llmdiet.artifacts import temporary_files_under

    before = tempfile.gettempdir()
    with temporary_files_under(tmp_path / ".NAME.partial-1" / ".tmp") as where:
        made = Path(tempfile.mkdtemp(prefix="llmdiet-onnx-"))
        assert made.parent == where and os.environ["TMPDIR"] == str(where)
    assert not where.exists() and tempfile.gettempdir() == before
