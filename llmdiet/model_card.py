"""Hugging Face model cards (``README.md`` with YAML front matter) for distilled students and quantized artifacts.

Every output llmdiet writes that is a model gets a card: what it is, how it was made (the exact command),
its size, the evaluation results when there are any, and the provenance of all of it. The front matter is
``huggingface_hub.ModelCardData``, so the hub renders and indexes it (base_model, datasets, language, license,
pipeline_tag, tags).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CARD_FILE = "README.md"
MARKER = "<!-- written by llmdiet -->"


def _languages(direction: str | None) -> list[str]:
    return [p for p in (direction or "en-fr").split("-") if p]


def _table(rows: list[list[Any]], headers: list[str]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_model_card(
    out: str | Path,
    *,
    title: str,
    kind: str,
    base_model: str,
    how: str,
    command: str,
    size: dict,
    provenance: dict,
    datasets: list[str] | None = None,
    direction: str | None = "en-fr",
    license: str = "apache-2.0",
    tags: list[str] | None = None,
    results: list[dict] | None = None,
    loading: str = "",
    demo: bool = False,
) -> Path:
    """Write ``out/README.md``. ``results``: rows of ``{"set", "bleu", "chrf", "rougeL", "source"}``."""
    from huggingface_hub import ModelCard, ModelCardData

    base = base_model if base_model and not Path(base_model).exists() else None  # hub ids only
    data = ModelCardData(
        base_model=base,
        datasets=datasets or None,
        language=_languages(direction),
        license=license,
        pipeline_tag="translation",
        tags=["llmdiet", kind, "translation", *(tags or []), *(["demo"] if demo else [])],
    )
    body = [MARKER, f"# {title}", ""]
    if demo:
        from llmdiet.demo import DEMO_BANNER

        body += [f"> {DEMO_BANNER}", ""]
    body += ["## How it was made", "", how, "", "```bash", command, "```", ""]
    body += ["## Size", "", _table([[k, v] for k, v in size.items() if v is not None], ["quantity", "value"]), ""]
    if results:
        rows = [
            [
                r["set"],
                f"{r['bleu']:.2f}",
                f"{r['chrf']:.2f}",
                f"{r['rougeL']:.2f}" if r.get("rougeL") is not None else "",
                r.get("source", ""),
            ]
            for r in results
        ]
        body += [
            "## Evaluation",
            "",
            _table(rows, ["eval set", "BLEU", "chrF", "ROUGE-L", "from"]),
            "",
            "BLEU and chrF: sacrebleu defaults; ROUGE-L: rouge_score with llmdiet's Unicode word tokenizer.",
            "",
        ]
    else:
        body += ["## Evaluation", "", "Not evaluated yet: `llmdiet eval --model <this directory> --eval-set ...`", ""]
    if loading:
        body += ["## Use", "", loading, ""]
    hardware = provenance.get("hardware", {})
    libs = provenance.get("libraries", {})
    body += [
        "## Provenance",
        "",
        _table(
            [
                ["git sha", provenance.get("git_sha")],
                ["date", provenance.get("date")],
                ["seed", provenance.get("seed")],
                ["hardware", hardware.get("cpu") or hardware.get("machine")],
                ["libraries", ", ".join(f"{k} {v}" for k, v in libs.items() if v)],
            ],
            ["what", "value"],
        ),
        "",
    ]
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))
    path = Path(out) / CARD_FILE
    card.save(path)
    return path
