"""The study's figures (PNG), drawn from ``study_results.json``'s content only.

* ``bleu_by_alpha.png`` / ``rougeL_by_alpha.png``: each set's score against alpha, 95% CI bars, the teacher
  (dashed) and the vanilla student (dotted) as references;
* ``loss_curves.png``: training loss by alpha: total, CE and KD;
* ``bleu_vs_size.png``, ``bleu_vs_latency.png``, ``bleu_vs_throughput.png``: in-domain BLEU against cost, the
  Pareto front (no other model is both cheaper and better) drawn and its models ringed;
* ``bleu_vs_bits.png``: the 2-8-bit sweep, teacher vs students, RTN (dashed) vs GPFQ (solid).
"""

from __future__ import annotations

from pathlib import Path

DEMO_NOTE = " (DEMO models and corpus written for llmdiet)"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def pareto_front(points: list[tuple[float, float, str]], lower_cost_better: bool = True) -> list[str]:
    """Labels of the points no other point beats on both cost and BLEU (cost first in each tuple)."""
    ordered = sorted(points, key=lambda p: (p[0] if lower_cost_better else -p[0], -p[1]))
    front, best = [], float("-inf")
    for _cost, score, label in ordered:
        if score > best:
            front.append(label)
            best = score
    return front


def _students_by_alpha(data: dict) -> list[dict]:
    return sorted(
        (m for m in data["models"].values() if m["role"] == "student" and m["label"].startswith("alpha-")),
        key=lambda m: m["alpha"],
    )


def _title(data: dict, text: str) -> str:
    return text + (DEMO_NOTE if data["study"]["demo"] else "")


def metric_by_alpha(data: dict, metric: str, path: Path) -> Path | None:
    students = _students_by_alpha(data)
    if not students:
        return None
    plt = _plt()
    sets = data["study"]["in_domain"] + data["study"]["out_of_domain"]
    fig, axes = plt.subplots(1, len(sets), figsize=(4.6 * len(sets), 4), squeeze=False)
    name = {"bleu": "BLEU", "rougeL": "ROUGE-L", "chrf": "chrF"}[metric]
    for ax, set_name in zip(axes[0], sets):
        xs = [m["alpha"] for m in students]
        ys = [m["sets"][set_name][metric] for m in students]
        ci = [m["sets"][set_name].get(f"{metric}_ci") for m in students]
        if all(ci):
            ax.errorbar(
                xs,
                ys,
                yerr=[[y - c["low"] for y, c in zip(ys, ci)], [c["high"] - y for y, c in zip(ys, ci)]],
                fmt="o-",
                capsize=4,
                label="distilled students (95% percentile CI)",
            )
        else:
            ax.plot(xs, ys, "o-", label="distilled students")
        for ref, style in ((data["models"].get("teacher"), "--"), (data["models"].get("student-vanilla"), ":")):
            if ref and set_name in ref["sets"]:
                ax.axhline(ref["sets"][set_name][metric], color="grey", linestyle=style, label=ref["label"])
        kind = "in-domain" if set_name in data["study"]["in_domain"] else "out-of-domain"
        ax.set_title(f"{set_name} ({kind})", fontsize=10)
        ax.set_xlabel("alpha (0 = fine-tuning on references only)")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(_title(data, f"{name} of the distilled student by alpha"), fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def loss_curves(data: dict, path: Path) -> Path | None:
    curves = {label: c for label, c in data["training"].items() if label.startswith("alpha-")}
    if not curves:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, key, name in zip(axes, ("loss", "ce", "kd"), ("total loss", "CE (references)", "KD (teacher)")):
        for label, curve in sorted(curves.items(), key=lambda kv: float(kv[0].split("-", 1)[1])):
            pts = curve["train"].get(key) or []
            if key == "kd" and label == "alpha-0":
                continue  # no teacher term at alpha 0 (logged as 0)
            if pts:
                ax.plot([s for s, _ in pts], [v for _, v in pts], label=label)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("training step")
        ax.set_ylabel("loss per target token")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(_title(data, "Training losses by alpha (total = alpha*T^2*KD + (1-alpha)*CE)"), fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


MARKERS = {
    None: "o",
    "torch-bf16": "s",
    "dynamic-int8": "^",
    "onnx-fp32": "P",
    "onnx-dynamic-int8": "<",
    "onnx-static-int8": "D",
    "ct2-int8": "v",
    "quanto-int8": "X",
    "torchao-int8": ">",
}


def bleu_vs_cost(data: dict, cost: str, path: Path) -> Path | None:
    """cost: size_mb | latency | throughput. Colour: the float model a point comes from; marker: the quantization
    method; only the Pareto front, the teacher and the vanilla student are labelled, so dozens of models stay readable."""
    first = data["study"]["in_domain"][0]
    pts = []
    for m in data["models"].values():
        value = {
            "size_mb": m["size_mb"],
            "latency": (m["latency"] or {}).get("ms_per_sentence"),
            "throughput": m["throughput_sent_s"],
        }[cost]
        if value:
            pts.append((value, m["sets"][first]["bleu"], m["label"]))
    if len(pts) < 2:
        return None
    plt = _plt()
    front = pareto_front(pts, lower_cost_better=cost != "throughput")
    bases = list(dict.fromkeys(data["models"][label]["base"] for _, _, label in pts))
    cmap = plt.get_cmap("tab10" if len(bases) <= 10 else "tab20")
    color = {b: cmap(i % cmap.N) for i, b in enumerate(bases)}
    fig, ax = plt.subplots(figsize=(10, 6.5))
    for value, bleu, label in pts:
        m = data["models"][label]
        ax.scatter(
            [value],
            [bleu],
            color=color[m["base"]],
            marker=MARKERS.get(m["method"], "o"),
            s=90 if label in front else 40,
            zorder=3,
            edgecolors="black" if label in front else "none",
        )
        if label in front or m["role"] in ("teacher", "vanilla"):
            ax.annotate(label, (value, bleu), fontsize=8, xytext=(5, 4), textcoords="offset points")
    fx = sorted(((v, b) for v, b, label in pts if label in front), key=lambda p: p[0])
    ax.plot([v for v, _ in fx], [b for _, b in fx], "k-", lw=1, alpha=0.6, label="Pareto front (ringed, labelled)")
    for b in bases:
        ax.scatter([], [], color=color[b], marker="o", label=b)
    for method in dict.fromkeys(data["models"][label]["method"] for _, _, label in pts):
        ax.scatter([], [], color="grey", marker=MARKERS.get(method, "o"), label=method or "float")
    xlabel = {
        "size_mb": "size (MB, on disk or in memory; log scale)",
        "latency": "latency at batch 1 (ms per sentence; log scale)",
        "throughput": f"throughput at batch {data['study']['eval']['batch_size']} (sentences/s; log scale)",
    }[cost]
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"BLEU on {first} (in-domain)")
    what = {"size_mb": "size", "latency": "latency (batch 1)", "throughput": "throughput (batched)"}[cost]
    ax.set_title(_title(data, f"In-domain BLEU vs {what}: colour = model, marker = quantization"), fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def bleu_vs_bits(data: dict, path: Path) -> Path | None:
    if not data["bits"]:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 5.5))
    cmap = plt.get_cmap("tab10")
    for i, (label, points) in enumerate(data["bits"].items()):
        color = cmap(i % 10)
        for method, style in (("rtn", "--"), ("gpfq", "-")):
            pts = sorted((p["bits"], p["bleu"]) for p in points if p["method"] == method)
            if pts:
                ax.plot(
                    [b for b, _ in pts],
                    [y for _, y in pts],
                    style,
                    marker="o",
                    color=color,
                    label=f"{label} {method.upper()}",
                )
        base = [p for p in points if p["method"] == "float"]
        if base:
            ax.scatter([9], [base[0]["bleu"]], marker="*", color=color, s=70)
    ax.set_xticks([2, 3, 4, 5, 6, 7, 8, 9], ["2", "3", "4", "5", "6", "7", "8", "fp32"])
    ax.set_xlabel("bits per Linear weight (star: the float model)")
    ax.set_ylabel("BLEU")
    ax.set_title(_title(data, "BLEU vs bit width: teacher vs students, RTN (dashed) vs GPFQ (solid)"), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_figures(data: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    made = [
        metric_by_alpha(data, "bleu", out / "bleu_by_alpha.png"),
        metric_by_alpha(data, "rougeL", out / "rougeL_by_alpha.png"),
        loss_curves(data, out / "loss_curves.png"),
        bleu_vs_cost(data, "size_mb", out / "bleu_vs_size.png"),
        bleu_vs_cost(data, "latency", out / "bleu_vs_latency.png"),
        bleu_vs_cost(data, "throughput", out / "bleu_vs_throughput.png"),
        bleu_vs_bits(data, out / "bleu_vs_bits.png"),
    ]
    return [p for p in made if p]
