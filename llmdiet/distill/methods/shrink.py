"""shrink: a student made from the teacher's own blocks, with an optional hidden-state loss (any method).

``--student_init copy_layers`` builds the student by copying evenly spaced teacher blocks
(:mod:`llmdiet.distill.student_init`); ``--hidden_weight W`` adds W times the MSE between each student block's
output and that of the teacher block it was copied from (:func:`llmdiet.distill.losses.hidden_state_loss`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from llmdiet.config import ConfigError, check_range
from llmdiet.distill.methods import StudentModifier, register

if TYPE_CHECKING:
    from llmdiet.distill.settings import DistillationArguments


@dataclass
class ShrinkConfig:
    student_init: str = field(
        default="pretrained",
        metadata={
            "help": "pretrained: load --student_model; copy_layers: shrink the teacher "
            "(evenly spaced blocks, first and last kept; teacher width).",
            "choices": ["pretrained", "copy_layers"],
        },
    )
    student_encoder_layers: Optional[int] = field(
        default=None, metadata={"help": "copy_layers: encoder blocks (>= 1)."}
    )
    student_decoder_layers: Optional[int] = field(
        default=None, metadata={"help": "copy_layers: decoder blocks (>= 1)."}
    )
    hidden_weight: float = field(
        default=0.0,
        metadata={
            "help": "copy_layers: weight of the hidden-state loss, the MSE between each student "
            "block's output and that of the teacher block it was copied from (>= 0)."
        },
    )

    def __post_init__(self) -> None:
        check_range("student_encoder_layers", self.student_encoder_layers, 1)
        check_range("student_decoder_layers", self.student_decoder_layers, 1)
        check_range("hidden_weight", self.hidden_weight, 0.0)
        if self.student_init == "copy_layers" and (
            self.student_encoder_layers is None or self.student_decoder_layers is None
        ):
            raise ConfigError(
                "--student_init copy_layers needs --student_encoder_layers N and --student_decoder_layers M"
            )
        if self.hidden_weight > 0 and self.student_init != "copy_layers":
            raise ConfigError(
                "--hidden_weight needs --student_init copy_layers (it compares each student block with "
                "the teacher block it was copied from); or set --hidden_weight 0"
            )


def stack_layers(model: Any, stack: str) -> Any:
    """The encoder's or decoder's list of layers: ``encoder.block`` (T5) or ``model.encoder.layers`` (BART-like)."""
    part = model.get_encoder() if stack == "encoder" else model.get_decoder()
    return part.block if hasattr(part, "block") else part.layers


def hidden_state_hooks(student: Any, teacher: Any, layers: dict) -> dict:
    """Forward hooks that keep each copied student block's output and its teacher block's output."""
    from llmdiet.compat import transformers_major
    from llmdiet.config import ConfigError

    if transformers_major() >= 5 and student.config.model_type == "m2m_100":
        raise ConfigError(
            "--hidden_weight with an M2M100/NLLB student does not train on transformers 5 yet (the second step fails "
            "in backward; known, issue 21): use --hidden_weight 0, or transformers 4.57 (constraints-onnx.txt)"
        )
    store: dict = {"student": {}, "teacher": {}}
    for stack in ("encoder", "decoder"):
        for i, t in enumerate(layers[stack]):
            for role, model, index in (("student", student, i), ("teacher", teacher, t)):
                block = stack_layers(model, stack)[index]
                block.register_forward_hook(
                    # a layer returns a tuple (hidden states first) in transformers 4.x, often the tensor in 5.x
                    lambda m, a, out, role=role, key=(stack, i): store[role].__setitem__(
                        key, out[0] if isinstance(out, tuple) else out
                    )
                )
    store["keys"] = [(stack, i) for stack in ("encoder", "decoder") for i in range(len(layers[stack]))]
    return store


def hidden_term(store: dict, inputs: dict, labels: Any) -> Any:
    """The hidden-state MSE of the last forward (encoder rows masked by the attention mask, decoder by labels)."""
    from llmdiet.distill.losses import IGNORE_INDEX, hidden_state_loss

    masks = {"encoder": inputs["attention_mask"], "decoder": labels != IGNORE_INDEX}
    keys = store["keys"]
    return hidden_state_loss(
        [store["student"][k] for k in keys], [store["teacher"][k] for k in keys], [masks[k[0]] for k in keys]
    )


def card(args: DistillationArguments) -> str:
    text = (
        f"student built from the teacher's blocks (copy_layers: {args.student_encoder_layers} encoder, "
        f"{args.student_decoder_layers} decoder blocks)"
    )
    return text + (f" with a hidden-state MSE term of weight {args.hidden_weight}" if args.hidden_weight > 0 else "")


MODIFIER = register(
    StudentModifier(
        name="shrink",
        config=ShrinkConfig,
        card=card,
        active=lambda args: args.student_init == "copy_layers",
        teacher_cache=lambda args: args.hidden_weight == 0,  # the hidden loss needs the teacher's hidden states
    )
)
