"""The distillation methods side by side on the offline demo: one student per method, same budget and data.

    python bench/distill_methods.py            # -> bench/results/distill-methods-demo.json and a Markdown table

Each method trains with ``llmdiet distill --preset demo <flags>`` (6 epochs, 1,000 En->Fr rows), is scored by
``llmdiet eval`` on ``demo-en-fr`` (600 rows in demo corpus v3), and gets BLEU with a 95% sacreBLEU bootstrap interval
(1,000 resamples, seed 12345). Step time is the Trainer's train_runtime minus its in-training evaluations
(``eval_runtime``: generation time depends on what a model generates), divided by the optimizer steps; the ratio
is to ``kd`` in the same run. ``--reuse`` re-scores finished runs without training them again; ``--table`` only
prints the README's methods table from the results file. Demo numbers show the methods work; they say nothing about translation quality.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
METHODS = {
    "kd": [],
    "kd reverse_kl": ["--divergence", "reverse_kl"],
    "kd jsd(0.5)": ["--divergence", "jsd", "--jsd_beta", "0.5"],
    "kd skew_kl(0.1)": ["--divergence", "skew_kl", "--skew_alpha", "0.1"],
    "dkd": ["--method", "dkd", "--temperature", "4"],
    "gkd (lmbda 0.5, jsd)": ["--method", "gkd", "--lmbda", "0.5", "--divergence", "jsd", "--gkd_max_new_tokens", "32"],
    "kd + fake-quant 4-bit": ["--student_fake_quant", "4"],
    "kd + fake-quant 4-bit, GPFQ init": ["--student_fake_quant", "4", "--fake_quant_init", "gpfq"],
    "dml (two students; student a)": ["--method", "dml"],
    "logit_mse (centered)": ["--method", "logit_mse", "--logit_mse_center", "true"],
    "copy_layers 1+1 + hidden 1.0": [
        "--student_init",
        "copy_layers",
        "--student_encoder_layers",
        "1",
        "--student_decoder_layers",
        "1",
        "--hidden_weight",
        "1.0",
    ],
}


# method -> (README name, its flags, what it optimises)
README_ROWS = {
    "kd": ("kd (default)", "`--method kd` (`--alpha`, `--temperature`)", "alpha·T²·KL(teacher‖student) + (1−alpha)·CE"),
    "kd reverse_kl": (
        "reverse KL",
        "`--divergence reverse_kl`",
        "alpha·T²·KL(student‖teacher) + (1−alpha)·CE (mode-seeking)",
    ),
    "kd jsd(0.5)": (
        "generalised JSD",
        "`--divergence jsd --jsd_beta B`",
        "β·KL(p_T‖M)+(1−β)·KL(p_S‖M), M = β·p_T+(1−β)·p_S; β=0 is forward, β=1 reverse KL",
    ),
    "kd skew_kl(0.1)": (
        "skew KL",
        "`--divergence skew_kl\\|skew_reverse_kl --skew_alpha A`",
        "KL(p_T‖A·p_T+(1−A)·p_S) (DistiLLM); A=0 is plain KL",
    ),
    "dkd": (
        "DKD",
        "`--method dkd --dkd_alpha --dkd_beta`",
        "CE + T²·(a·TCKD + b·NCKD): gold-vs-rest and non-gold distributions decoupled",
    ),
    "gkd (lmbda 0.5, jsd)": (
        "on-policy GKD",
        "`--method gkd --lmbda L --gkd_temperature --gkd_max_new_tokens [--gkd_seq_kd]`",
        "with probability L the student samples the targets, the teacher scores them, loss = the "
        "divergence on sampled tokens; else kd",
    ),
    "kd + fake-quant 4-bit": (
        "quantization-aware KD",
        "`--student_fake_quant BITS`",
        "kd through b-bit per-channel RTN fake-quantized Linear weights (straight-through); saved "
        "on the grid with its packed size",
    ),
    "kd + fake-quant 4-bit, GPFQ init": (
        "quantization-aware KD, GPFQ init",
        "`--student_fake_quant BITS --fake_quant_init gpfq`",
        "as above, starting from the GPFQ-quantized student, on GPFQ's per-layer grid",
    ),
    "dml (two students; student a)": (
        "deep mutual learning",
        "`--method dml [--dml_teacher_weight W --student_b_model M --dml_noise S]`",
        "two students, each (1−alpha)·CE + alpha·T²·KL(peer‖self) (+ W·T²·KL(teacher‖self)); "
        "saved as `student_a/`, `student_b/` (BLEU: student a; step: both)",
    ),
    "logit_mse (centered)": (
        "logit matching",
        "`--method logit_mse [--logit_mse_center --logit_mse_scale S]`",
        "alpha·S·mean_v(z_S − z_T)² + (1−alpha)·CE on (centered) logits (Ba & Caruana 2014; Kim et al. 2021); no T",
    ),
    "copy_layers 1+1 + hidden 1.0": (
        "shrink-and-fine-tune + hidden loss",
        "`--student_init copy_layers --student_encoder_layers N --student_decoder_layers M --hidden_weight W`",
        "kd for a student made of evenly spaced teacher blocks + W·MSE(each block's output, its "
        "teacher block's output)",
    ),
}


def readme_table(rows: list[dict]) -> str:
    lines = [
        "| method | flags | what it optimises | demo-en-fr BLEU (95% CI) | training step vs kd |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        name, flags, what = README_ROWS[r["method"]]
        lines.append(f"| {name} | {flags} | {what} | {r['bleu']:.1f} ± {r['ci95']:.1f} | {r['step_vs_kd']:.2f}x |")
    return "\n".join(lines)


def main() -> int:
    if "--table" in sys.argv:
        print(readme_table(json.loads((REPO / "bench" / "results" / "distill-methods-demo.json").read_text())["rows"]))
        return 0
    reuse = "--reuse" in sys.argv
    sys.path.insert(0, str(REPO))
    from llmdiet.evaluation.statistics import confidence_interval
    from llmdiet.provenance import provenance

    root = REPO / "runs" / "distill-methods"
    rows = []
    for name, flags in METHODS.items():
        slug = name.replace(" ", "_").replace("(", "").replace(")", "").replace(",", "")
        out, ev = root / slug, root / f"eval-{slug}"
        cmd = [
            "llmdiet",
            "distill",
            "--preset",
            "demo",
            "--output_dir",
            str(out),
            "--overwrite_output_dir",
            "true",
            "--disable_tqdm",
            "true",
            *flags,
        ]
        if not (reuse and (out / "training_log.json").exists()):
            subprocess.run(cmd, check=True, capture_output=True, text=True)
            shutil.rmtree(ev, ignore_errors=True)  # a new student: its earlier eval run (other weights) is refused
        model = out / "student_a" if "dml" in flags else out  # dml saves two students; student a is scored
        subprocess.run(
            [
                "llmdiet",
                "eval",
                "--model",
                str(model),
                "--eval_set",
                "demo-en-fr",
                "--output_dir",
                str(ev),
                "--no_progress",
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        log = json.loads((out / "training_log.json").read_text())
        samples = sorted(
            (json.loads(x) for x in (ev / "demo-en-fr" / "samples.jsonl").read_text().splitlines()),
            key=lambda s: s["index"],
        )  # row order (the file is in batch order): the bootstrap needs it
        ci = confidence_interval([s["hypothesis"] for s in samples], [s["reference"] for s in samples], "bleu")
        eval_s = sum(e.get("eval_runtime", 0.0) for e in log["log_history"])
        step_s = (log["train_metrics"]["train_runtime"] - eval_s) / log["global_step"]
        rows.append(
            {
                "method": name,
                "command": " ".join(cmd[:4] + ["..."] + flags),
                "bleu": ci["score"],
                "ci95": (ci["high"] - ci["low"]) / 2,
                "step_s": step_s,
                "steps": log["global_step"],
            }
        )
        print(
            f"{name}: BLEU {ci['score']:.1f} [{ci['low']:.1f}, {ci['high']:.1f}], {step_s * 1000:.0f} ms/step",
            flush=True,
        )
    kd_step = rows[0]["step_s"]
    for r in rows:
        r["step_vs_kd"] = r["step_s"] / kd_step
    result = {
        "rows": rows,
        "provenance": provenance(0, [sys.executable, *sys.argv]),
        "note": "demo models and data: the numbers show the methods work, not translation quality",
    }
    path = REPO / "bench" / "results" / "distill-methods-demo.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str))
    print("\n" + readme_table(rows))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
