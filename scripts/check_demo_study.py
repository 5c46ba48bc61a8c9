"""Does a fresh demo study reproduce the committed one (docs/study-demo)? Run by .ci/run after the demo study.

    python scripts/check_demo_study.py FRESH_STUDY_DIR [--committed docs/study-demo/study_results.json]

The shipped demo models make the teacher's inference the same on every CPU, so the rule is:
- the teacher, every quantization of the teacher and the teacher verifying a draft: the same BLEU and chrF on every
  set, exactly (to 1e-6);
- every trained student (and its quantizations): BLEU inside the committed 95% interval of its score on every set
  (training thousands of steps still drifts between CPUs; the interval is what the committed study claims);
- the same answer (the model the rule chooses), or one line naming both, for a near-tie that flips on another CPU.

Exit 0 when all hold; 1 with one line per difference otherwise. Models on one side only (a method whose library
is not installed here) are listed, not counted as differences.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from llmdiet.study.markdown import answer

ROOT = Path(__file__).resolve().parents[1]


def chosen(data: dict) -> str | None:
    """The model named by the answer line under the rule."""
    for line in answer(data):
        if line.startswith("**Answer for this study:") and "`" in line:
            return line.split("`")[1]
    return None


def differences(committed: dict, fresh: dict) -> tuple[list[str], list[str]]:
    problems, notes = [], []
    for label, old in committed["models"].items():
        new = fresh["models"].get(label)
        if new is None:
            notes.append(f"{label}: in the committed study only")
            continue
        # the teacher, its quantizations and the teacher verifying a draft (greedy output unchanged)
        exact = old["role"] in ("teacher", "speculative") or (old["role"] == "quantized" and old["base"] == "teacher")
        for set_name, scores in old["sets"].items():
            got = (new["sets"].get(set_name) or {}).get("bleu")
            if got is None:
                problems.append(f"{label} {set_name}: no fresh score")
            elif exact:
                for metric in ("bleu", "chrf"):
                    if abs(new["sets"][set_name][metric] - scores[metric]) > 1e-6:
                        problems.append(
                            f"{label} {set_name} {metric}: {new['sets'][set_name][metric]:.4f} != committed "
                            f"{scores[metric]:.4f} (the teacher's inference should be exact on every CPU)"
                        )
            elif (
                scores.get("bleu_ci") and not scores["bleu_ci"]["low"] - 1e-6 <= got <= scores["bleu_ci"]["high"] + 1e-6
            ):
                ci = scores["bleu_ci"]
                problems.append(
                    f"{label} {set_name} BLEU {got:.2f} outside the committed interval [{ci['low']:.2f}, {ci['high']:.2f}]"
                )
    notes += [f"{label}: in the fresh study only" for label in fresh["models"] if label not in committed["models"]]
    old_answer, new_answer = chosen(committed), chosen(fresh)
    if old_answer != new_answer:
        problems.append(f"answer: {new_answer} != committed {old_answer}")
    return problems, notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fresh", help="the fresh study directory (its study_results.json)")
    parser.add_argument("--committed", default=str(ROOT / "docs" / "study-demo" / "study_results.json"))
    args = parser.parse_args(argv)
    committed = json.loads(Path(args.committed).read_text(encoding="utf-8"))
    fresh = json.loads((Path(args.fresh) / "study_results.json").read_text(encoding="utf-8"))
    problems, notes = differences(committed, fresh)
    for line in notes:
        print(f"note: {line}")
    for line in problems:
        print(f"DIFFERENT: {line}")
    print(
        f"demo study vs {args.committed}: {len(problems)} difference(s); answer {chosen(fresh)}"
        + (" (same as committed)" if not problems else "")
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
