"""Replay against forgetting: rows of other directions or domains mixed into the distillation data.

A student distilled on one direction forgets the others it was pretrained on (the reference study's flan-T5-small
loses most of its French->English and Korean->English). Replay mixes a stated share of rows from other sets, each
presented with its own prefix, into the training data; the teacher scores them like any training row (logits, or
its top-k cache, which is keyed by the token ids it covers). ``--replay_set`` names the sets in the eval-set format
(a name under ``eval_sets/`` or a YAML file; their ``role`` should be ``train``), ``--replay_fraction`` the share.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from llmdiet.config import ConfigError
from llmdiet.data import ParallelRow


@dataclass
class ReplaySet:
    name: str
    prefix: str
    rows: list[ParallelRow]
    available: int  # rows the set declares (the drawn rows are a seeded sample of them)


def replay_count(train_rows: int, fraction: float) -> int:
    """Replay rows that make up ``fraction`` of a mix with ``train_rows`` training rows."""
    return round(train_rows * fraction / (1 - fraction))


def load_replay(names: list[str], fraction: float, train_rows: int, seed: int) -> list[ReplaySet]:
    """The replay rows: :func:`replay_count` rows in all, split evenly over the sets (the first sets take the
    remainder), each set's share drawn without replacement with ``seed``."""
    from llmdiet.evaluation.eval_sets import resolve_eval_set

    total = replay_count(train_rows, fraction)
    out = []
    for i, name in enumerate(names):
        spec = resolve_eval_set(name)
        rows = spec.load()
        share = total // len(names) + (1 if i < total % len(names) else 0)
        if share > len(rows):
            raise ConfigError(
                f"--replay_set {name}: {share} replay rows asked for (--replay_fraction {fraction} of {train_rows} "
                f"training rows over {len(names)} sets) but the set has {len(rows)}; lower --replay_fraction"
            )
        drawn = random.Random(f"{seed}:{spec.name}").sample(range(len(rows)), share)
        out.append(ReplaySet(spec.name, spec.prefix, [rows[j] for j in sorted(drawn)], len(rows)))
    return out


def replay_summary(sets: list[ReplaySet], fraction: float) -> dict:
    """What training_log.json and the card record."""
    return {
        "fraction": fraction,
        "rows": sum(len(s.rows) for s in sets),
        "sets": {s.name: {"rows": len(s.rows), "of": s.available, "prefix": s.prefix} for s in sets},
    }
