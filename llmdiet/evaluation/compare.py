"""``llmdiet compare DIR [DIR ...]``: eval runs side by side, as a table and two plots.

Reads each run directory's ``results.json`` and prints one row per run: label (the directory
name), model, backend, size in MB (10^6 bytes, the artifact on disk; the in-memory size, marked
``*``, where there is no local artifact), BLEU / chrF / ROUGE-L for every eval set that any run
has, sentences per second for every set (that set's sentences / its generation wall time: sets differ in
length, so they are never pooled) and the peak process memory (highest over the sets).

Writes into ``--output_dir`` (default: the parent directory of the first run):
``compare.md``, ``compare.csv``, ``bleu_vs_size.png`` and ``bleu_vs_latency.png`` (one panel per set:
BLEU against the model size, and against that set's mean latency per sentence = generation wall
time / sentences; a distinct colour and marker per run and the run's number on every point) and
``compare.json`` (which runs were compared). Replacing an earlier comparison of other runs is announced.
``--format csv`` prints CSV instead of Markdown.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from llmdiet.config import ConfigError, parse_config
from llmdiet.evaluation.reports import MB, fmt, load_results, markdown_table, size_mb

METRICS = (("bleu", "BLEU"), ("chrf", "chrF"), ("rougeL", "ROUGE-L"))
OUTPUT_FILES = ("compare.md", "compare.csv", "bleu_vs_size.png", "bleu_vs_latency.png", "compare.json")


@dataclass
class CompareArguments:
    runs: list[str] = field(default_factory=list, metadata={"help": "Eval run directories (positional)."})
    format: str = field(
        default="markdown", metadata={"help": "What to print: markdown or csv.", "choices": ["markdown", "csv"]}
    )
    output_dir: Optional[str] = field(
        default=None,
        metadata={"help": "Where to write compare.md/.csv and the plots (default: parent of the first run)."},
    )
    labels: list[str] = field(
        default_factory=list, metadata={"help": "Names for the runs in the table and plots (default: directory names)."}
    )

    def __post_init__(self):
        if not self.runs:
            raise ConfigError("give at least one eval run directory: llmdiet compare DIR [DIR ...]")
        if self.labels and len(self.labels) != len(self.runs):
            raise ConfigError(f"--labels has {len(self.labels)} names for {len(self.runs)} runs")


@dataclass
class RunSummary:
    label: str
    model: str
    backend: str
    size_mb: float | None
    size_source: str
    scores: dict[str, dict[str, float]]  # set -> metric -> value
    set_ms_per_sentence: dict[str, float | None]  # set -> wall time / sentences of that set, in ms
    sentences_per_s: float | None
    ms_per_sentence: float | None
    peak_rss_mb: float | None
    partial_timing: bool  # some set's timing covers only a resumed part
    demo: bool


def summarize(run_dir: str | Path, label: str | None = None) -> RunSummary:
    results = load_results(run_dir)
    mb, source = size_mb(results["size"])
    sentences = sum((e.get("timing") or {}).get("num_sentences", 0) for e in results["sets"].values())
    wall = sum((e.get("timing") or {}).get("wall_s", 0.0) for e in results["sets"].values())
    peaks = [p for e in results["sets"].values() if (p := (e.get("timing") or {}).get("peak_rss_bytes"))]
    return RunSummary(
        label=label or Path(run_dir).resolve().name,
        model=results["model"]["name"],
        backend=results["model"]["backend"].get("backend", "?"),
        size_mb=mb,
        size_source=source,
        scores={name: {key: e["metrics"][key] for key, _ in METRICS} for name, e in results["sets"].items()},
        set_ms_per_sentence={name: _ms_per_sentence(e.get("timing")) for name, e in results["sets"].items()},
        sentences_per_s=sentences / wall if wall > 0 else None,
        ms_per_sentence=1000 * wall / sentences if sentences else None,
        peak_rss_mb=max(peaks) / MB if peaks else None,
        partial_timing=any(not (e.get("timing") or {}).get("covers_all_rows", False) for e in results["sets"].values()),
        demo=bool(results.get("demo")),
    )


def _ms_per_sentence(timing: dict | None) -> float | None:
    if not timing or not timing.get("num_sentences"):
        return None
    return 1000 * timing["wall_s"] / timing["num_sentences"]


def set_names(runs: list[RunSummary]) -> list[str]:
    names: list[str] = []
    for run in runs:
        names += [n for n in run.scores if n not in names]
    return names


def table(runs: list[RunSummary]) -> tuple[list[str], list[list]]:
    """Headers and rows (numbers unformatted; None where a run lacks a set)."""
    sets = set_names(runs)
    headers = ["run", "model", "backend", "size MB"]
    headers += [f"{s} {label}" for s in sets for _, label in METRICS]
    headers += [f"{s} sent/s" for s in sets] + ["peak RSS MB"]
    rows = []
    for r in runs:
        row = [r.label, r.model, r.backend, r.size_mb]
        row += [r.scores.get(s, {}).get(key) for s in sets for key, _ in METRICS]
        row += [1000 / ms if (ms := r.set_ms_per_sentence.get(s)) else None for s in sets]
        row += [r.peak_rss_mb]
        rows.append(row)
    return headers, rows


def to_markdown(runs: list[RunSummary]) -> str:
    headers, rows = table(runs)
    shown = []
    n_sets = len(set_names(runs))
    for r, row in zip(runs, rows):
        row = list(row)
        row[3] = fmt(r.size_mb, 1) + ("*" if r.size_source == "memory" else "")
        for k in range(len(row) - 1 - n_sets, len(row) - 1):  # per-set sentences/s
            row[k] = fmt(row[k]) + ("†" if r.partial_timing else "")
        shown.append(row)
    notes = []
    if any(r.size_source == "memory" for r in runs):
        notes.append("\\* in-memory size (no local artifact on disk).")
    if any(r.partial_timing for r in runs):
        notes.append("† timing covers only the part translated after a resume (or was not recorded).")
    notes.append("sent/s: sentences / generation wall time, per eval set (sets differ in length, so never pooled).")
    if any(r.demo for r in runs):
        from llmdiet.demo import DEMO_BANNER

        notes.append(DEMO_BANNER)
    return markdown_table(headers, shown) + ("\n\n" + "\n".join(notes) if notes else "") + "\n"


def to_csv(runs: list[RunSummary]) -> str:
    headers, rows = table(runs)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(headers + ["size source", "ms per sentence", "partial timing"])
    for r, row in zip(runs, rows):
        writer.writerow(
            ["" if v is None else v for v in row]
            + [r.size_source, "" if r.ms_per_sentence is None else r.ms_per_sentence, r.partial_timing]
        )
    return buf.getvalue()


def run_style(i: int) -> tuple:
    """A distinct colour and marker per run (20 colours x 15 markers, no repeat below 20 runs)."""
    import matplotlib.pyplot as plt

    markers = "osD^vPXh<>p*H8d"
    return plt.get_cmap("tab20")(i % 20), markers[i % len(markers)]


def plot(runs: list[RunSummary], out: Path) -> list[Path]:
    """``bleu_vs_size.png`` and ``bleu_vs_latency.png``: one panel per eval set; each run has its own colour and
    marker, and every point carries the run's number (the legend maps numbers to runs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    sets = set_names(runs)
    styles = [run_style(i) for i in range(len(runs))]
    legend = [
        Line2D([], [], color=c, marker=m, linestyle="", label=f"{i + 1}: {r.label}")
        for i, (r, (c, m)) in enumerate(zip(runs, styles))
    ]
    demo = " (DEMO models and data)" if any(r.demo for r in runs) else ""
    written = []
    for name, title, xlabel, x_of in (
        ("bleu_vs_size.png", "BLEU vs model size", "model size (MB on disk; * in memory)", lambda r, s: r.size_mb),
        (
            "bleu_vs_latency.png",
            "BLEU vs latency",
            "latency per sentence (ms = generation wall time / sentences)",
            lambda r, s: r.set_ms_per_sentence.get(s),
        ),
    ):
        fig, axes = plt.subplots(1, len(sets), figsize=(5.2 * len(sets) + 2.6, 4.6), squeeze=False)
        for ax, set_name in zip(axes[0], sets):
            for i, run in enumerate(runs):
                x = x_of(run, set_name)
                if set_name in run.scores and x is not None:
                    y = run.scores[set_name]["bleu"]
                    ax.scatter(x, y, color=styles[i][0], marker=styles[i][1], s=46, edgecolors="black", linewidths=0.4)
                    ax.annotate(str(i + 1), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("BLEU (sacrebleu)")
            ax.set_title(f"{set_name}", fontsize=10)
            ax.grid(alpha=0.3)
        fig.legend(handles=legend, fontsize=7, loc="center right", title="runs")
        fig.suptitle(f"{title}, per eval set{demo}", fontsize=11)
        fig.tight_layout(rect=(0, 0, 1 - 2.4 / (5.2 * len(sets) + 2.6), 1))
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        written.append(out / name)
    return written


def _positional_to_runs(argv: list[str]) -> list[str]:
    """``compare A B --format csv`` -> ``--format csv --runs A B`` (HfArgumentParser has no positionals)."""
    runs, rest, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("-"):
            runs.append(arg)
        elif arg in ("--runs", "--labels"):  # options that take several values
            values = []
            while i < len(argv) and not argv[i].startswith("-"):
                values.append(argv[i])
                i += 1
            if arg == "--runs":
                runs += values
            else:
                rest += [arg, *values]
        else:
            rest.append(arg)
            if "=" not in arg and arg not in ("-h", "--help") and i < len(argv):  # its one value
                rest.append(argv[i])
                i += 1
    return rest + (["--runs", *runs] if runs else [])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    (args,) = parse_config(
        [CompareArguments],
        _positional_to_runs(argv),
        prog="llmdiet compare",
        description="Side-by-side table and plots over eval run directories.",
    )
    runs = [summarize(d, label) for d, label in zip(args.runs, args.labels or [None] * len(args.runs))]
    out = Path(args.output_dir) if args.output_dir else Path(args.runs[0]).resolve().parent
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "compare.json"
    inputs = [str(Path(d).resolve()) for d in args.runs]
    if manifest.exists():
        earlier = json.loads(manifest.read_text()).get("runs", [])
        if earlier != inputs:
            print(
                f"note: replacing the earlier comparison in {out} (of {len(earlier)} runs: "
                f"{', '.join(Path(e).name for e in earlier[:6])}{' ...' if len(earlier) > 6 else ''}); "
                "use --output_dir DIR to keep both",
                file=sys.stderr,
            )
    elif any((out / f).exists() for f in OUTPUT_FILES):
        print(
            f"note: replacing compare.* files in {out} written by an earlier llmdiet version; use --output_dir DIR to keep them",
            file=sys.stderr,
        )
    manifest.write_text(json.dumps({"runs": inputs, "labels": [r.label for r in runs]}, indent=2))
    markdown, table_csv = to_markdown(runs), to_csv(runs)
    (out / "compare.md").write_text(markdown, encoding="utf-8")
    (out / "compare.csv").write_text(table_csv, encoding="utf-8")
    plot(runs, out)
    print(table_csv if args.format == "csv" else markdown, end="")
    print(f"\nwrote {', '.join(str(out / f) for f in OUTPUT_FILES)}", file=sys.stderr)
    return 0
