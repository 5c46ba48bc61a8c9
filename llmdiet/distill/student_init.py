"""Shrink-and-fine-tune students: a student made by copying evenly spaced layers of the teacher.

As in the Hugging Face seq2seq-distillation project ("shrink and fine-tune"): the student has the teacher's
width (d_model, heads, d_ff) and fewer blocks; it takes the teacher's embeddings, final layer norms and LM
head, and for each stack the blocks at evenly spaced indices, always keeping the first and the last. T5-specific:
only block 0 of each stack owns the relative-position bias, so student block 0 is always teacher block 0 and no
other student block carries a bias. BART-like families (BART, mBART, Marian, M2M100/NLLB, Pegasus) keep their
position embeddings and layer norms outside the layers, so any layer can be copied. The result is an ordinary
model of the teacher's class.
"""

from __future__ import annotations

import copy
from typing import Any


def layers_to_copy(teacher_layers: int, student_layers: int) -> list[int]:
    """Evenly spaced teacher block indices, first and last included: 24 -> 3 gives [0, 12, 23]."""
    if not 1 <= student_layers <= teacher_layers:
        raise ValueError(f"a student needs between 1 and {teacher_layers} layers, got {student_layers}")
    if student_layers == 1:
        return [0]
    return [round(i * (teacher_layers - 1) / (student_layers - 1)) for i in range(student_layers)]


T5_FAMILY = ("t5", "mt5", "umt5")  # blocks in encoder.block.N / decoder.block.N; sizes num_layers / num_decoder_layers
# blocks in model.encoder.layers.N / model.decoder.layers.N; sizes encoder_layers / decoder_layers
BART_LIKE = ("bart", "mbart", "marian", "m2m_100", "pegasus", "blenderbot", "blenderbot-small")


def _stacks(model_type: str) -> tuple[tuple[str, str], int]:
    """(config fields of the encoder/decoder sizes, position of the layer index in a state-dict key)."""
    if model_type in T5_FAMILY:
        return ("num_layers", "num_decoder_layers"), 2
    if model_type in BART_LIKE:
        return ("encoder_layers", "decoder_layers"), 3
    from llmdiet.config import ConfigError

    raise ConfigError(
        f"--student_init copy_layers supports {', '.join(T5_FAMILY + BART_LIKE)}; the teacher is a {model_type} "
        "model: use --student_init pretrained with a student of that family"
    )


def _stack_of(parts: list[str], position: int) -> str | None:
    """'encoder'/'decoder' when the key is one of a stack's layers (T5: encoder.block.N; BART: model.encoder.layers.N)."""
    if position == 2 and len(parts) > 2 and parts[0] in ("encoder", "decoder") and parts[1] == "block":
        return parts[0]
    if position == 3 and len(parts) > 3 and parts[0] == "model" and parts[1] in ("encoder", "decoder"):
        return parts[1] if parts[2] == "layers" else None
    return None


def copy_layers_student(teacher: Any, encoder_layers: int, decoder_layers: int) -> Any:
    """``(student, {"encoder": [...], "decoder": [...]})``: the student built from the teacher's blocks."""
    from llmdiet.compat import t5_as_in_4x

    (encoder_field, decoder_field), position = _stacks(teacher.config.model_type)
    config = copy.deepcopy(teacher.config)
    mapping = {
        "encoder": layers_to_copy(getattr(config, encoder_field), encoder_layers),
        "decoder": layers_to_copy(getattr(config, decoder_field), decoder_layers),
    }
    setattr(config, encoder_field, encoder_layers)
    setattr(config, decoder_field, decoder_layers)
    if hasattr(config, "num_hidden_layers") and encoder_field == "encoder_layers":
        config.num_hidden_layers = encoder_layers
    student = t5_as_in_4x(type(teacher)(config))  # an untied T5 head stays untied (transformers 5)
    source = teacher.state_dict()
    state = {}
    for key in student.state_dict():
        parts = key.split(".")
        stack = _stack_of(parts, position)
        if stack is not None:
            parts[position] = str(mapping[stack][int(parts[position])])
        state[key] = source[".".join(parts)].clone()
    student.load_state_dict(state, strict=True)
    return student, mapping
