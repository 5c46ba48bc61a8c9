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


def _languages(direction: str | None) -> list[str] | None:
    """``"en-fr"`` -> ``["en", "fr"]`` when both sides look like language codes (column names such as
    ``source-target`` say nothing about languages)."""
    parts = [p for p in (direction or "").split("-") if p]
    if len(parts) == 2 and all(2 <= len(p) <= 8 and p.replace("_", "").isalpha() for p in parts):
        if not {"source", "target", "src", "tgt"} & set(parts):
            return parts
    return None


def base_card_data(base_model: str | None) -> dict:
    """``license`` and ``language`` from the base model's own card (``README.md`` front matter): a local directory,
    or the hub cache for a hub id (never the network). Empty when unknown."""
    if not base_model:
        return {}
    path = Path(base_model) / CARD_FILE
    text = None
    if path.is_file():
        text = path.read_text(encoding="utf-8", errors="replace")
    else:
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(str(base_model), CARD_FILE)
            if isinstance(cached, str):
                text = Path(cached).read_text(encoding="utf-8", errors="replace")
        except Exception:  # not a hub id
            text = None
    if not text or not text.startswith("---"):
        return {}
    import yaml

    try:
        front = yaml.safe_load(text.split("---", 2)[1]) or {}
    except yaml.YAMLError:
        return {}
    if not isinstance(front, dict):
        return {}
    return {k: front[k] for k in ("license", "language") if front.get(k)}


def _table(rows: list[list[Any]], headers: list[str]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _evaluation_section(results: list[dict] | None) -> list[str]:
    if not results:
        return ["## Evaluation", "", "Not evaluated yet: `llmdiet eval --model <this directory> --eval_set ...`", ""]
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
    return [
        "## Evaluation",
        "",
        _table(rows, ["eval set", "BLEU", "chrF", "ROUGE-L", "from"]),
        "",
        "BLEU and chrF: sacrebleu defaults; ROUGE-L: rouge_score with llmdiet's Unicode word tokenizer.",
        "",
    ]


def _provenance_section(provenance: dict) -> list[str]:
    hardware = provenance.get("hardware", {})
    libs = provenance.get("libraries", {})
    rows = [
        ["git sha", provenance.get("git_sha")],
        ["date", provenance.get("date")],
        ["seed", provenance.get("seed")],
        ["hardware", hardware.get("cpu") or hardware.get("machine")],
        ["libraries", ", ".join(f"{k} {v}" for k, v in libs.items() if v)],
    ]
    return ["## Provenance", "", _table(rows, ["what", "value"]), ""]


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
    direction: str | None = None,
    license: str | None = None,
    tags: list[str] | None = None,
    results: list[dict] | None = None,
    loading: str = "",
    demo: bool = False,
) -> Path:
    """Write ``out/README.md``. ``results``: rows of ``{"set", "bleu", "chrf", "rougeL", "source"}``."""
    from huggingface_hub import ModelCard, ModelCardData

    base = base_model if base_model and not Path(base_model).exists() else None  # hub ids only
    inherited = base_card_data(base_model)  # a derived model keeps its base model's license
    data = ModelCardData(
        base_model=base,
        datasets=datasets or None,
        language=_languages(direction) or inherited.get("language"),
        license=license or inherited.get("license"),
        pipeline_tag="translation",
        tags=["llmdiet", kind, "translation", *(tags or []), *(["demo"] if demo else [])],
    )
    body = [MARKER, f"# {title}", ""]
    if demo:
        from llmdiet.demo import DEMO_BANNER

        body += [f"> {DEMO_BANNER}", ""]
    body += ["## How it was made", "", how, "", "```bash", command, "```", ""]
    body += ["## Size", "", _table([[k, v] for k, v in size.items() if v is not None], ["quantity", "value"]), ""]
    body += _evaluation_section(results)
    if loading:
        body += ["## Use", "", loading, ""]
    body += _provenance_section(provenance)
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))
    path = Path(out) / CARD_FILE
    card.save(path)
    return path
