"""Shrink-and-fine-tune students: a student made by copying evenly spaced layers of the teacher.

As in the Hugging Face seq2seq-distillation project ("shrink and fine-tune"): the student has the teacher's
width (d_model, heads, d_ff) and fewer blocks; it takes the teacher's embeddings, final layer norms and LM
head, and for each stack the blocks at evenly spaced indices, always keeping the first and the last. T5-specific:
only block 0 of each stack owns the relative-position bias, so student block 0 is always teacher block 0 and no
other student block carries a bias. The result is an ordinary ``T5ForConditionalGeneration``.
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


T5_FAMILY = ("t5", "mt5", "umt5")  # the families whose blocks live in encoder.block / decoder.block


def copy_layers_student(teacher: Any, encoder_layers: int, decoder_layers: int) -> Any:
    """``(student, {"encoder": [...], "decoder": [...]})``: the student built from the teacher's blocks."""
    from llmdiet.config import ConfigError

    if teacher.config.model_type not in T5_FAMILY:
        raise ConfigError(
            f"--student_init copy_layers supports the T5 family ({', '.join(T5_FAMILY)}); the teacher is a "
            f"{teacher.config.model_type} model: use --student_init pretrained with a student of that family"
        )
    config = copy.deepcopy(teacher.config)
    mapping = {
        "encoder": layers_to_copy(config.num_layers, encoder_layers),
        "decoder": layers_to_copy(config.num_decoder_layers, decoder_layers),
    }
    config.num_layers, config.num_decoder_layers = encoder_layers, decoder_layers
    student = type(teacher)(config)
    source = teacher.state_dict()
    state = {}
    for key in student.state_dict():
        parts = key.split(".")
        if len(parts) > 2 and parts[0] in mapping and parts[1] == "block":
            parts[2] = str(mapping[parts[0]][int(parts[2])])
        state[key] = source[".".join(parts)].clone()
    student.load_state_dict(state, strict=True)
    return student, mapping
