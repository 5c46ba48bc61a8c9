"""``llmdiet compare DIR [DIR ...]``: eval runs side by side, as a table and two plots.

Reads each run directory's ``results.json`` and prints one row per run: label (the directory
name), model, backend, size in MB (10^6 bytes, the artifact on disk; the in-memory size, marked
``*``, where there is no local artifact), BLEU / chrF / ROUGE-L for every eval set that any run
has, sentences per second over all sets (total sentences / total generation wall time) and the
peak process memory (highest over the sets).

Writes into ``--out`` (default: the parent directory of the first run):
``compare.md``, ``compare.csv``, ``bleu_vs_size.png`` and ``bleu_vs_latency.png`` (BLEU of each
set against the model size, and against that set's mean latency per sentence = generation wall
time / sentences).
``--format csv`` prints CSV instead of Markdown.
"""

from __future__ import annotations

import csv
import io
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from llmdiet.config import ConfigError, parse_config
from llmdiet.evaluation.reports import MB, fmt, load_results, markdown_table, size_mb

METRICS = (("bleu", "BLEU"), ("chrf", "chrF"), ("rougeL", "ROUGE-L"))
OUTPUT_FILES = ("compare.md", "compare.csv", "bleu_vs_size.png", "bleu_vs_latency.png")


@dataclass
class CompareArguments:
    runs: list[str] = field(default_factory=list, metadata={"help": "Eval run directories (positional)."})
    format: str = field(default="markdown", metadata={"help": "What to print: markdown or csv.", "choices": ["markdown", "csv"]})
    out: Optional[str] = field(default=None, metadata={"help": "Where to write compare.md/.csv and the plots (default: parent of the first run)."})
    labels: list[str] = field(default_factory=list, metadata={"help": "Names for the runs in the table and plots (default: directory names)."})

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
    peaks = [(e.get("timing") or {}).get("peak_rss_bytes") for e in results["sets"].values()]
    peaks = [p for p in peaks if p]
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
    headers += ["sent/s", "peak RSS MB"]
    rows = []
    for r in runs:
        row = [r.label, r.model, r.backend, r.size_mb]
        row += [r.scores.get(s, {}).get(key) for s in sets for key, _ in METRICS]
        row += [r.sentences_per_s, r.peak_rss_mb]
        rows.append(row)
    return headers, rows


def to_markdown(runs: list[RunSummary]) -> str:
    headers, rows = table(runs)
    shown = []
    for r, row in zip(runs, rows):
        row = list(row)
        row[3] = fmt(r.size_mb, 1) + ("*" if r.size_source == "memory" else "")
        row[-2] = fmt(r.sentences_per_s) + ("†" if r.partial_timing else "")
        shown.append(row)
    notes = []
    if any(r.size_source == "memory" for r in runs):
        notes.append("\\* in-memory size (no local artifact on disk).")
    if any(r.partial_timing for r in runs):
        notes.append("† timing covers only the part translated after a resume (or was not recorded).")
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
        writer.writerow(["" if v is None else v for v in row] + [r.size_source, "" if r.ms_per_sentence is None else r.ms_per_sentence, r.partial_timing])
    return buf.getvalue()


def plot(runs: list[RunSummary], out: Path) -> list[Path]:
    """``bleu_vs_size.png`` and ``bleu_vs_latency.png``: one colour per run, one marker per eval set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    markers = "os^Dvp<>h*"
    sets = set_names(runs)
    legend = [Line2D([], [], color=colours[i % len(colours)], marker="o", linestyle="", label=r.label)
              for i, r in enumerate(runs)]
    legend += [Line2D([], [], color="grey", marker=markers[i % len(markers)], linestyle="", label=s)
               for i, s in enumerate(sets)]
    written = []
    for name, title, xlabel, x_of in (
        ("bleu_vs_size.png", "BLEU vs model size", "model size (MB)", lambda r, s: r.size_mb),
        ("bleu_vs_latency.png", "BLEU vs latency", "latency per sentence (ms, wall time / sentences of the set)",
         lambda r, s: r.set_ms_per_sentence.get(s)),
    ):
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        for i, run in enumerate(runs):
            for j, set_name in enumerate(sets):
                x = x_of(run, set_name)
                if set_name in run.scores and x is not None:
                    ax.scatter(x, run.scores[set_name]["bleu"], color=colours[i % len(colours)],
                               marker=markers[j % len(markers)], s=40)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("BLEU (sacrebleu)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(handles=legend, fontsize=7, loc="best")
        fig.tight_layout()
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
    (args,) = parse_config([CompareArguments], _positional_to_runs(argv), prog="llmdiet compare",
                           description="Side-by-side table and plots over eval run directories.")
    runs = [summarize(d, label) for d, label in zip(args.runs, args.labels or [None] * len(args.runs))]
    out = Path(args.out) if args.out else Path(args.runs[0]).resolve().parent
    out.mkdir(parents=True, exist_ok=True)
    markdown, table_csv = to_markdown(runs), to_csv(runs)
    (out / "compare.md").write_text(markdown, encoding="utf-8")
    (out / "compare.csv").write_text(table_csv, encoding="utf-8")
    plot(runs, out)
    print(table_csv if args.format == "csv" else markdown, end="")
    print(f"\nwrote {', '.join(str(out / f) for f in OUTPUT_FILES)}", file=sys.stderr)
    return 0
