"""What a distillation run leaves for people: the student's model card and the loss-curve plot."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from llmdiet.demo import DEMO_MODEL_PREFIX

if TYPE_CHECKING:
    from llmdiet.distill.settings import DataArguments, DistillationArguments


def plot_loss_curve(log_history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (
        ("loss", "train total (the method's objective)"),
        ("ce", "train CE (labels)"),
        ("kd", "train KD term (before its weights)"),
    ):
        points = [(e["step"], e[key]) for e in log_history if key in e and "step" in e]
        if points:
            ax.plot(*zip(*points), label=label)
    for key, label in (("eval_loss", "eval total (same objective)"), ("eval_ce", "eval CE"), ("eval_kd", "eval KD")):
        points = [(e["step"], e[key]) for e in log_history if key in e]
        if points:
            ax.plot(*zip(*points), "o--", label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title("distillation losses per optimizer step (train: running mean; eval: held-out rows)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_student_card(
    out: Path, args: DistillationArguments, data: DataArguments, summary: dict, eval_rows: int
) -> Path:
    """The student's model card (README.md): the method's own objective, command, in-training eval scores, size,
    provenance. ``args``/``data`` are the run's DistillationArguments and DataArguments."""
    from llmdiet.model_card import write_model_card
    from llmdiet.modeling import directory_bytes

    history = summary["log_history"]
    last = next((e for e in reversed(history) if "eval_bleu" in e), None)
    results = (
        [
            {
                "set": f"dev rows {data.dev_start}..{data.dev_start + eval_rows - 1}"
                f" of {Path(data.data_files).name if data.data_files else data.dataset_name}",
                "bleu": last["eval_bleu"],
                "chrf": last["eval_chrf"],
                "rougeL": last.get("eval_rougeL"),
                "source": f"in-training eval at step {last['step']}",
            }
        ]
        if last
        else None
    )
    demo = args.teacher_model.startswith(DEMO_MODEL_PREFIX) or args.student_model.startswith(DEMO_MODEL_PREFIX)
    command = summary["provenance"]["command"]
    from llmdiet.quantize.registry import GENERATE_SNIPPET

    source_lang, target_lang = data.source_lang or data.source_column, data.target_lang or data.target_column
    return write_model_card(
        out,
        title=f"{out.name}: a student distilled by llmdiet",
        kind="distillation",
        base_model=args.teacher_model if args.student_init == "copy_layers" else args.student_model,
        datasets=None if data.data_files else [data.dataset_name],
        how=(
            f"Student `{summary['resolved_models']['student']}` distilled from teacher `{args.teacher_model}` with "
            f"llmdiet: {args.card_text()}; {data.train_rows} training rows from "
            f"{data.data_files or data.dataset_name}, prefix `{summary.get('source_prefix', data.source_prefix)}`"
            + _pruned_words(summary.get("pruned_from"))
            + _replay_words(summary.get("replay"))
            + _overlap_words(summary.get("test_overlap"))
            + "."
        ),
        command=command if isinstance(command, str) else " ".join(command),
        size={"parameters": f"{summary['parameters']:,}", "disk (MB)": f"{directory_bytes(out) / 1e6:.1f}"},
        provenance=summary["provenance"],
        results=results,
        demo=demo,
        direction=f"{source_lang}-{target_lang}",
        loading=GENERATE_SNIPPET.replace("{out}", str(out)).replace("{prefix}", summary.get("source_prefix") or ""),
    )


def _pruned_words(pruned: dict | None) -> str:
    if not pruned:
        return ""
    before, after = pruned["parameters"]
    return (
        f"; the student is `{pruned['source_model']}` pruned by llmdiet prune --method {pruned['method']} "
        f"({before:,} -> {after:,} parameters), recovered here (prune, then distill)"
    )


def _replay_words(replay: dict | None) -> str:
    if not replay:
        return ""
    parts = ", ".join(f"{v['rows']} of {name} (prefix `{v['prefix']}`)" for name, v in replay["sets"].items())
    return f"; replay against forgetting: {replay['rows']} rows ({100 * replay['fraction']:g}% of the mix): {parts}"


def _overlap_words(overlap: dict | None) -> str:
    if not overlap:
        return ""
    dropped = sum(n for per_set in overlap["rows"].values() for n in per_set.values())
    checked = ", ".join(overlap["checked_sets"]) or "none"
    return f"; no training or dev sentence occurs in the held-out sets ({checked})" + (
        f" after dropping {dropped} rows that did" if dropped else ""
    )
