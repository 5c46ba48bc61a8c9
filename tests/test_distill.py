"""DistillationTrainer and the distill recipe on the tiny offline demo models."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llmdiet.config import ConfigError, parse_config
from llmdiet.demo import DEMO_EN_FR
from llmdiet.distill.job import PRESETS, DataArguments, DistillationArguments, main, run

REPO = Path(__file__).resolve().parents[1]


def parse(argv):
    from transformers import Seq2SeqTrainingArguments

    return parse_config(
        (DistillationArguments, DataArguments, Seq2SeqTrainingArguments),
        argv,
        presets=PRESETS,
        default_preset="reference",
    )


def small_run_argv(demo_assets, out, *extra):
    return [
        "--preset",
        "demo",
        "--teacher_model",
        str(demo_assets.teacher),
        "--student_model",
        str(demo_assets.student),
        "--output_dir",
        str(out),
        "--train_rows",
        "128",
        "--eval_rows",
        "32",
        "--max_steps",
        "12",
        "--per_device_train_batch_size",
        "16",
        "--logging_steps",
        "2",
        "--eval_strategy",
        "no",
        "--save_strategy",
        "no",
        "--disable_tqdm",
        "true",
        "--learning_rate",
        "3e-3",
        "--load_best_model_at_end",
        "false",
        *extra,
    ]


def state_dict_copy(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_teacher_frozen_student_trained_and_kd_logged(demo_assets, tmp_path):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq, Seq2SeqTrainingArguments

    from llmdiet.data import read_parallel_file, tokenize_rows
    from llmdiet.distill.trainer import DistillationTrainer

    tok = AutoTokenizer.from_pretrained(demo_assets.tokenizer)
    teacher = AutoModelForSeq2SeqLM.from_pretrained(demo_assets.teacher)
    student = AutoModelForSeq2SeqLM.from_pretrained(demo_assets.student)
    teacher_before, student_before = state_dict_copy(teacher), state_dict_copy(student)
    rows = read_parallel_file(DEMO_EN_FR, "en", "fr")[:64]
    ds, _ = tokenize_rows(rows, tok, "translate English to French: ", 64, 64)
    args = Seq2SeqTrainingArguments(
        output_dir=str(tmp_path),
        max_steps=6,
        per_device_train_batch_size=16,
        learning_rate=3e-3,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
    )
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        alpha=0.5,
        temperature=2.0,
        args=args,
        train_dataset=ds,
        data_collator=DataCollatorForSeq2Seq(tok, model=student),
    )
    grads_seen = {}

    def capture(*_):
        grads_seen["student"] = any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
        grads_seen["teacher"] = any(p.grad is not None for p in teacher.parameters())

    trainer.add_callback(
        type(
            "C",
            (__import__("transformers").TrainerCallback,),
            {"on_pre_optimizer_step": lambda self, *a, **k: capture()},
        )()
    )
    trainer.train()
    assert grads_seen == {"student": True, "teacher": False}
    assert all(not p.requires_grad for p in teacher.parameters()) and not teacher.training
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k]), f"teacher weight {k} changed"
    changed = [k for k, v in student.state_dict().items() if not torch.equal(v, student_before[k])]
    assert len(changed) > 0.9 * len(student_before)
    logged = [e for e in trainer.state.log_history if "loss" in e]
    assert len(logged) == 6 and all("ce" in e and "kd" in e for e in logged)
    # The logged total is the alpha-weighted combination of the logged parts.
    for e in logged:
        assert e["loss"] == pytest.approx(0.5 * 4.0 * e["kd"] + 0.5 * e["ce"], rel=0.02)


def test_kd_goes_down_on_demo_and_outputs_are_usable(demo_assets, tmp_path):
    out = tmp_path / "run"
    assert main(small_run_argv(demo_assets, out, "--max_steps", "30", "--logging_steps", "5")) == 0
    log = json.loads((out / "training_log.json").read_text())
    kd = [e["kd"] for e in log["log_history"] if "kd" in e]
    assert len(kd) == 6 and kd[-1] < 0.7 * kd[0], kd  # the demo references are ambiguous: KD has a floor
    assert log["provenance"]["git_sha"] and log["provenance"]["libraries"]["torch"]
    assert log["truncation"]["train"]["examples"] == 128
    assert (out / "loss_curve.png").stat().st_size > 10_000
    assert (out / "model.safetensors").exists()
    assert not any("teacher" in p.name for p in out.iterdir())

    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    student = AutoModelForSeq2SeqLM.from_pretrained(out)
    assert student.config.d_model == 48  # the student (the demo teacher has 64)
    tok = AutoTokenizer.from_pretrained(out)
    batch = tok(["translate English to French: The children read a book."], return_tensors="pt")
    text = tok.batch_decode(student.generate(**batch, max_new_tokens=12), skip_special_tokens=True)[0]
    assert text.strip() and tok.pad_token_id == 0
    assert student.lm_head.weight.data_ptr() != student.shared.weight.data_ptr()  # flan-T5's own head, also on 5.x


def test_alpha_zero_equals_plain_fine_tuning(demo_assets, tmp_path):
    from transformers import AutoModelForSeq2SeqLM, DataCollatorForSeq2Seq, Seq2SeqTrainer

    from llmdiet.data import read_parallel_file, tokenize_rows

    argv = small_run_argv(demo_assets, tmp_path / "kd0", "--alpha", "0", "--max_steps", "5", "--seed", "3")
    args, data, training = parse(argv)
    summary = run(args, data, training)
    assert summary["resolved_models"]["teacher"] is None  # no teacher loaded for alpha 0
    distilled = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "kd0")

    tok = __import__("transformers").AutoTokenizer.from_pretrained(demo_assets.student)
    plain = AutoModelForSeq2SeqLM.from_pretrained(demo_assets.student)
    rows = read_parallel_file(DEMO_EN_FR, "en", "fr")[:128]
    ds, _ = tokenize_rows(rows, tok, summary["source_prefix"], data.max_source_length, data.max_target_length)
    training.output_dir = str(tmp_path / "plain")
    Seq2SeqTrainer(
        model=plain,
        args=training,
        train_dataset=ds,
        data_collator=DataCollatorForSeq2Seq(tok, model=plain, label_pad_token_id=-100),
    ).train()
    for (k, a), b in zip(plain.state_dict().items(), distilled.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=f"weight {k} differs")


def test_gradient_accumulation_gives_the_full_batch_update(demo_assets, tmp_path):
    """Batch 16 in one step == two accumulated micro-batches of 8 (global token normalisation)."""
    weights = []
    for name, extra in (
        ("full", ["--per_device_train_batch_size", "16"]),
        ("accum", ["--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "2"]),
    ):
        args, data, training = parse(small_run_argv(demo_assets, tmp_path / name, "--max_steps", "3", *extra))
        run(args, data, training)
        weights.append(load_file(tmp_path / name / "model.safetensors"))
    for k in weights[0]:
        torch.testing.assert_close(weights[0][k], weights[1][k], rtol=1e-4, atol=1e-6, msg=f"weight {k} differs")


def test_vocab_mismatch_is_refused(demo_assets):
    from transformers import Seq2SeqTrainingArguments

    from llmdiet.demo import build_tiny_t5
    from llmdiet.distill.trainer import DistillationTrainer

    args = Seq2SeqTrainingArguments(output_dir="unused", report_to="none", use_cpu=True)
    with pytest.raises(ValueError, match="vocab size"):
        DistillationTrainer(model=build_tiny_t5("student", 100), teacher_model=build_tiny_t5("teacher", 200), args=args)


def test_config_yaml_flags_and_range_checks(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("alpha: 0.25\ntemperature: 4.0\nlearning_rate: 0.0002\ntrain_rows: 500\n")
    args, data, training = parse(["--config", str(cfg), "--temperature", "3", "--output_dir", str(tmp_path)])
    assert (args.alpha, args.temperature, training.learning_rate, data.train_rows) == (0.25, 3.0, 2e-4, 500)
    args, data, training = parse(["--output_dir", str(tmp_path)])  # the reference study's defaults
    assert (args.teacher_model, args.student_model, args.alpha) == ("google/flan-t5-large", "google/flan-t5-small", 0.5)
    assert (training.learning_rate, data.train_rows, data.eval_rows, data.dev_start) == (1e-5, 10_000, 1_000, 12_000)
    with pytest.raises(ConfigError, match="--alpha must be <= 1.0, got 1.5"):
        parse(["--alpha", "1.5"])
    with pytest.raises(ConfigError, match="--temperature must be > 0.0"):
        parse(["--temperature", "0"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("alpha: 0.5\nalhpa: 0.3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown option\(s\) \['alhpa'\]"):
        parse(["--config", str(bad)])


def test_cli_reports_bad_data_without_traceback(demo_assets, tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("en\tfr\nHello.\tBonjour.\nBroken row\n", encoding="utf-8")
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "recipes" / "distill.py"),
            "--data_files",
            str(bad),
            "--teacher_model",
            str(demo_assets.teacher),
            "--student_model",
            str(demo_assets.student),
            "--output_dir",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 2
    assert "bad.tsv:3: expected 2 TSV fields, found 1" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_help_documents_every_option():
    proc = subprocess.run(
        [sys.executable, str(REPO / "recipes" / "distill.py"), "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0
    for flag in (
        "--alpha",
        "--temperature",
        "--teacher_dtype",
        "--data_files",
        "--source_prefix",
        "--skip_bad_rows",
        "--learning_rate",
        "--gradient_accumulation_steps",
        "--resume_from_checkpoint",
        "--config",
        "--preset",
    ):
        assert flag in proc.stdout, flag


@pytest.mark.slow
def test_two_cpu_processes_under_accelerate(demo_assets, tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        str(REPO / "recipes" / "distill.py"),
        *small_run_argv(demo_assets, out, "--max_steps", "6", "--per_device_train_batch_size", "8"),
    ]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = json.loads((out / "training_log.json").read_text())
    assert log["world_size"] == 2 and log["global_step"] == 6
    # 128 rows / (2 ranks x 8 per rank) = 8 steps per epoch: the ranks split the data.
    assert log["log_history"][-1]["epoch"] == pytest.approx(6 / 8)
    assert len(list(out.glob("model*.safetensors"))) == 1
    assert proc.stdout.count("student saved to") == 1  # only rank 0 reports and writes
    assert all("ce" in e and "kd" in e for e in log["log_history"] if "loss" in e)


@pytest.mark.slow
def test_kill_and_resume_continues_from_the_checkpoint(demo_assets, tmp_path):
    import os
    import signal
    import time

    out = tmp_path / "resume"
    argv = small_run_argv(
        demo_assets,
        out,
        "--max_steps",
        "40",
        "--save_strategy",
        "steps",
        "--save_steps",
        "10",
        "--logging_steps",
        "5",
        "--save_total_limit",
        "5",
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "recipes" / "distill.py"), *argv],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "checkpoint-20").exists():
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "checkpoint-20").exists() and not (out / "training_log.json").exists()
    resumed = subprocess.run(
        [sys.executable, str(REPO / "recipes" / "distill.py"), *argv, "--resume_from_checkpoint", "latest"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = json.loads((out / "training_log.json").read_text())
    assert log["global_step"] == 40
    steps = [e["step"] for e in log["log_history"] if "loss" in e]
    assert steps == list(range(5, 41, 5)), steps  # continuous history: nothing lost, nothing repeated


def test_resume_latest_skips_checkpoints_killed_while_saving(tmp_path, caplog):
    """A kill during a save leaves checkpoint-N without (or with a truncated) trainer_state.json, which the Trainer
    writes last; ``latest`` resumes from the newest complete one instead of crashing (seen in CI when the kill of
    the test above landed inside the save of checkpoint-20)."""
    from llmdiet.distill.run import resume_target as _resume_target

    for step, state in ((10, '{"global_step": 10}'), (20, None), (30, '{"global_st'), (5, '{"global_step": 5}')):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"")
        if state is not None:
            (folder / "trainer_state.json").write_text(state)
    with caplog.at_level("WARNING"):
        assert _resume_target("latest", str(tmp_path)) == str(tmp_path / "checkpoint-10")
    assert "checkpoint-20, checkpoint-30 lack a readable trainer_state.json" in caplog.text
    assert _resume_target(str(tmp_path / "checkpoint-5"), str(tmp_path)) == str(tmp_path / "checkpoint-5")
    with pytest.raises(ConfigError, match="checkpoint-20: no readable trainer_state.json"):
        _resume_target(str(tmp_path / "checkpoint-20"), str(tmp_path))
    only_broken = tmp_path / "broken"
    (only_broken / "checkpoint-3").mkdir(parents=True)
    with pytest.raises(ConfigError, match="no complete checkpoint-\\* folder .*checkpoint-3 lack"):
        _resume_target("latest", str(only_broken))
    assert _resume_target(None, str(tmp_path)) is None


def test_teacher_cache_training_matches_live_teacher_with_full_support(demo_assets, tmp_path):
    """With k = vocab size the cached top-k loss is the full KL: same training as the live teacher."""
    from transformers import AutoConfig

    vocab = AutoConfig.from_pretrained(demo_assets.teacher).vocab_size
    runs = {}
    for name, extra in (
        ("live", []),
        ("cached", ["--teacher_cache", str(tmp_path / "cache"), "--teacher_cache_topk", str(vocab)]),
    ):
        args, data, training = parse(
            small_run_argv(demo_assets, tmp_path / name, "--max_steps", "4", "--eval_rows", "0", *extra)
        )
        runs[name] = run(args, data, training)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
        ".llmdiet.lock",
        "meta.json",
        "shard-00000.safetensors",
    ]
    live = [e["loss"] for e in runs["live"]["log_history"] if "loss" in e]
    cached = [e["loss"] for e in runs["cached"]["log_history"] if "loss" in e]
    # fp16 storage of the log-probs is the only difference
    assert cached == pytest.approx(live, rel=2e-3)


def test_teacher_cache_resumes_and_refuses_other_settings(demo_assets, tmp_path):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq

    from llmdiet.data import read_parallel_file, tokenize_rows
    from llmdiet.distill.teacher_cache import TeacherCache, TeacherCacheError, build_teacher_cache

    tok = AutoTokenizer.from_pretrained(demo_assets.tokenizer)
    teacher = AutoModelForSeq2SeqLM.from_pretrained(demo_assets.teacher)
    ds, _ = tokenize_rows(read_parallel_file(DEMO_EN_FR, "en", "fr")[:40], tok, "translate English to French: ", 64, 64)
    collate = DataCollatorForSeq2Seq(tok, model=teacher)
    build_teacher_cache(teacher, ds, collate, tmp_path / "c", k=4, shard_size=16)
    (tmp_path / "c" / "shard-00001.safetensors").unlink()  # as if killed while writing shard 1
    with pytest.raises(TeacherCacheError, match="shard-00001.safetensors: missing"):
        TeacherCache(tmp_path / "c")
    build_teacher_cache(teacher, ds, collate, tmp_path / "c", k=4, shard_size=16)
    cache = TeacherCache(tmp_path / "c")
    cache.check_matches(ds["labels"], 1.0)
    ids, logprobs = cache.batch([5], len(ds[5]["labels"]))
    with torch.no_grad():
        batch = collate([ds[5]])
        logits = teacher(**{k: v for k, v in batch.items() if k != "labels"}).logits
    expected = torch.log_softmax(logits, -1).topk(4, -1)
    assert torch.equal(ids[0], expected.indices[0])
    torch.testing.assert_close(logprobs[0], expected.values[0], atol=2e-3, rtol=1e-3)
    with pytest.raises(TeacherCacheError, match=r"built with other inputs \(changed: k \(4 -> 8\)\)"):
        build_teacher_cache(teacher, ds, collate, tmp_path / "c", k=8, shard_size=16)
    with pytest.raises(TeacherCacheError, match="temperature"):
        cache.check_matches(ds["labels"], 2.0)


def test_sequence_level_kd_trains_on_teacher_translations_and_resumes(demo_assets, tmp_path):
    from llmdiet.data import read_parallel_file
    from llmdiet.distill.pseudo_labels import generate_pseudo_labels

    out = tmp_path / "seqkd"
    args, data, training = parse(
        small_run_argv(
            demo_assets,
            out,
            "--sequence_kd",
            "replace",
            "--sequence_kd_beams",
            "2",
            "--train_rows",
            "48",
            "--max_steps",
            "3",
        )
    )
    summary = run(args, data, training)
    lines = [json.loads(x) for x in (out / "teacher_translations.jsonl").read_text().splitlines()]
    assert sorted(x["index"] for x in lines) == list(range(48))
    rows = read_parallel_file(DEMO_EN_FR, "en", "fr")[:48]
    # The demo teacher translates its own training data nearly perfectly: most pseudo-targets equal the references.
    same = sum(x["target"] == rows[x["index"]].target for x in lines)
    assert same >= 30, same
    assert summary["global_step"] == 3
    # Resume: drop the last 10 lines and leave a torn line; only the missing rows are regenerated.
    text = (out / "teacher_translations.jsonl").read_text().splitlines()
    (out / "teacher_translations.jsonl").write_text("\n".join(text[:38]) + '\n{"index": 4')
    targets = generate_pseudo_labels(
        str(demo_assets.teacher),
        rows,
        "translate English to French: ",
        out / "teacher_translations.jsonl",
        num_beams=2,
        max_new_tokens=64,
    )
    assert targets == [{x["index"]: x["target"] for x in lines}[i] for i in range(48)]
    assert len((out / "teacher_translations.jsonl").read_text().splitlines()) == 48


def test_quiet_runs_log_progress_lines_not_trainer_dicts(demo_assets, tmp_path, capsys, caplog):
    """The demo study printed 170 raw Trainer {'loss': ...} dicts among 747 lines; the study and the Python API now
    log one line per logging step (the values stay in training_log.json)."""
    import logging

    args, data, training = parse(
        small_run_argv(
            demo_assets, tmp_path / "q", "--max_steps", "4", "--logging_steps", "2", "--disable_tqdm", "true"
        )
    )
    with caplog.at_level(logging.INFO, logger="llmdiet"):
        summary = run(args, data, training, quiet=True)
    assert "{'loss'" not in capsys.readouterr().out
    lines = [r.message for r in caplog.records if ": step " in r.message]
    assert len(lines) >= 2 and "step 2/4" in lines[0] and "loss " in lines[0]
    assert any("loss" in e for e in summary["log_history"])


def test_a_teacher_with_another_token_to_id_map_is_refused_in_one_line(demo_assets, tmp_path):
    """Before: only vocab_size was compared (a ValueError traceback, exit 1); two tokenizers of one size that map
    tokens to other ids trained silently on misaligned distributions."""
    import json
    import shutil

    from llmdiet.cli import main as cli_main

    teacher = tmp_path / "teacher"
    shutil.copytree(demo_assets.teacher, teacher)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (demo_assets.tokenizer / name).exists() and not (teacher / name).exists():
            shutil.copy(demo_assets.tokenizer / name, teacher / name)
    spec = json.loads((teacher / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    a, b = [t for t in vocab if t.startswith("▁")][:2]
    vocab[a], vocab[b] = vocab[b], vocab[a]  # same size, two ids swapped
    (teacher / "tokenizer.json").write_text(json.dumps(spec))
    argv = small_run_argv(demo_assets, tmp_path / "out", "--max_steps", "1")
    argv[argv.index("--teacher_model") + 1] = str(teacher)
    with pytest.raises(ConfigError, match="its tokenizer maps 2 tokens to other ids than the student's"):
        run(*parse(argv))
    assert cli_main(["distill", *argv]) == 2


def test_three_concurrent_first_uses_of_a_teacher_cache_build_it_once(demo_assets, tmp_path, caplog):
    """Three study jobs that need the same cache at once: one builds every shard, the others wait (one line each
    naming the builder) and reuse it; all three succeed with the same cache."""
    import logging
    import threading

    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq

    from llmdiet.data import read_parallel_file, tokenize_rows
    from llmdiet.distill import teacher_cache
    from llmdiet.distill.teacher_cache import TeacherCache, build_teacher_cache_once

    tok = AutoTokenizer.from_pretrained(demo_assets.tokenizer)
    teacher = AutoModelForSeq2SeqLM.from_pretrained(demo_assets.teacher).eval()
    ds, _ = tokenize_rows(read_parallel_file(DEMO_EN_FR, "en", "fr")[:48], tok, "translate English to French: ", 64, 64)
    collate = DataCollatorForSeq2Seq(tok, model=teacher)
    built, real = [], teacher_cache._shard_tensors

    def counted(*args, **kwargs):
        built.append(args[3])  # the shard's first row
        return real(*args, **kwargs)

    errors: list[BaseException] = []

    def job():
        try:
            build_teacher_cache_once(teacher, ds, collate, tmp_path / "cache", k=4, shard_size=16)
        except BaseException as err:  # noqa: BLE001 - reported by the assertion below
            errors.append(err)

    teacher_cache._shard_tensors = counted
    try:
        with caplog.at_level(logging.INFO, logger="llmdiet"):
            threads = [threading.Thread(target=job) for _ in range(3)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=300)
    finally:
        teacher_cache._shard_tensors = real
    assert not errors, errors
    assert sorted(built) == [0, 16, 32]  # each of the 3 shards computed once, not 3 times
    TeacherCache(tmp_path / "cache").check_matches(ds["labels"], 1.0)
    waits = [r.message for r in caplog.records if "waiting for teacher cache build" in r.message]
    assert len(waits) <= 2 and all("pid" in w for w in waits)


def test_the_distill_command_prints_progress_lines_not_trainer_dicts(demo_assets, tmp_path, capsys):
    """Before: a CLI run printed 22 raw Trainer dicts and tqdm bars; --verbose brings them back."""
    from llmdiet import cli

    argv = ["distill", "--preset", "demo", "--output_dir", str(tmp_path / "d"), "--max_steps", "4"]
    argv += ["--logging_steps", "2", "--eval_strategy", "no", "--save_strategy", "no", "--train_rows", "64"]
    assert cli.main(argv) == 0  # (the CLI sets up its own logging: its lines go to stderr)
    out = capsys.readouterr()
    assert "{'loss'" not in out.out and "it/s]" not in out.err and "Writing model shards" not in out.err
    assert [line.split(": ", 2)[-1][:9] for line in out.err.splitlines() if ": step " in line] == [
        "step 2/4 ",
        "step 4/4 ",
    ]


def test_concurrent_students_sharing_a_teacher_translation_file_write_it_once(demo_assets, tmp_path):
    """--sequence_kd_file shared by several students (the alpha sweep, study jobs): before, each appended its own
    translations to the same JSONL at once; now the first writes it under a lock and the others reuse it."""
    import threading

    from llmdiet.data import read_parallel_file
    from llmdiet.distill.pseudo_labels import generate_pseudo_labels

    rows = read_parallel_file(DEMO_EN_FR, "en", "fr")[:24]
    out = tmp_path / "shared" / "teacher_translations.jsonl"
    results: list[list[str]] = []

    def student():
        results.append(
            generate_pseudo_labels(str(demo_assets.teacher), rows, "translate English to French: ", out, num_beams=1)
        )

    threads = [threading.Thread(target=student) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(x["index"] for x in lines) == list(range(24))  # each row once, not three times
    assert len(results) == 3 and results[0] == results[1] == results[2]
