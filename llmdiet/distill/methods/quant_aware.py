"""fake_quant: quantization-aware distillation under any method (``--student_fake_quant BITS``).

The student trains through b-bit fake-quantized Linear weights (straight-through estimator; the mechanics are
in :mod:`llmdiet.distill.fake_quant`); the saved student's weights lie on the grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

from llmdiet.config import ConfigError, check_range
from llmdiet.distill.methods import StudentModifier, register

if TYPE_CHECKING:
    from llmdiet.distill.settings import DistillationArguments


@dataclass
class FakeQuantConfig:
    student_fake_quant: Optional[int] = field(
        default=None,
        metadata={
            "help": "Quantization-aware distillation: train the student through b-bit fake-quantized "
            "Linear weights (RTN per channel, straight-through estimator; LM head float); "
            "the saved student's weights lie on the grid. BITS in [2, 8]."
        },
    )
    fake_quant_init: str = field(
        default="rtn",
        metadata={
            "help": "--student_fake_quant grid: rtn (per-channel round-to-nearest of the current "
            "weights) or gpfq (start from GPFQ-quantized weights on 128 training rows; "
            "train on GPFQ's per-layer grid).",
            "choices": ["rtn", "gpfq"],
        },
    )

    def __post_init__(self) -> None:
        check_range("student_fake_quant", self.student_fake_quant, 2, 8)
        if self.fake_quant_init == "gpfq" and not self.student_fake_quant:
            raise ConfigError("--fake_quant_init gpfq needs --student_fake_quant BITS")


def card(args: DistillationArguments) -> str:
    return f"trained through {args.student_fake_quant}-bit fake-quantized weights ({args.fake_quant_init} grid)"


MODIFIER = register(
    StudentModifier(
        name="fake_quant",
        config=FakeQuantConfig,
        card=card,
        active=lambda args: bool(args.student_fake_quant),
        teacher_cache=lambda args: True,
    )
)
