"""``llmdiet eval`` across processes (``accelerate launch --num_processes N -m llmdiet eval ...``).

Each process (rank) translates every N-th batch of the one length-sorted batch plan of a set, into its own
``samples.rank-R.jsonl``; rank 0 then merges them into ``samples.jsonl`` and scores the whole set, writes
``results.json`` and holds the run directory's lock. The batches are the batches of a one-process run, so the
outputs are too (``tests/test_eval_ranks.py`` checks samples and scores against one process). Timing in a
multi-process run is rank 0's share, marked with the number of processes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Every process waits here until all arrive (nothing to do in a one-process run)."""
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def part_file(self, set_dir: Path) -> Path:
        return set_dir / f"samples.rank-{self.rank}.jsonl"


def current_ranks() -> Ranks:
    """This process's rank among ``WORLD_SIZE`` (set by accelerate launch / torchrun); joins the process group
    (gloo on CPU, nccl on GPUs) when there are several."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Ranks(dist.get_rank(), dist.get_world_size())


def part_files(set_dir: Path) -> list[Path]:
    """The per-rank sample files of a set (left behind by an interrupted multi-process run, or to merge now)."""
    return sorted(set_dir.glob("samples.rank-*.jsonl"))
