"""On-policy generalised knowledge distillation (GKD, Agarwal et al. 2024) for encoder-decoder models.

With probability ``lmbda`` per training batch the *student* samples the targets for the batch's sources
(``--gkd_temperature``, ``--gkd_max_new_tokens``; eval mode and ``no_grad`` while sampling, train mode again
afterwards); the teacher then scores those targets teacher-forced and the loss is the chosen divergence on the
generated tokens only (no CE: the samples have no reference). Otherwise the batch's references are used with
the ordinary ``kd`` loss, so ``lmbda = 0`` is exactly ``--method kd``. With ``--gkd_seq_kd`` the other batches
are the *teacher's* samples instead of the references (on-policy + sequence-level KD, as in the paper).

TRL's GKDTrainer handles decoder-only models only; here the sources stay in the encoder and only the decoder
side is sampled. Under DDP every process samples its own batch from the unwrapped student.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmdiet.compat import decoder_inputs_from_labels
from llmdiet.config import check_range
from llmdiet.distill.methods import DistillationMethod, LossStep, register
from llmdiet.distill.methods.kd import KDConfig, divergence_text, kd_loss

if TYPE_CHECKING:
    import torch

    from llmdiet.distill.losses import DistillationLoss
    from llmdiet.distill.settings import DistillationArguments

IGNORE_INDEX = -100  # llmdiet.distill.losses.IGNORE_INDEX (not imported: this module loads before torch)


@dataclass
class GKDConfig(KDConfig):
    """gkd reads kd's divergence flags too (the divergence on sampled and on reference targets)."""

    lmbda: float = field(
        default=0.5,
        metadata={"help": "gkd: probability that a training batch is on-policy (student samples), in [0, 1]; 0 = kd."},
    )
    gkd_temperature: float = field(default=1.0, metadata={"help": "gkd: sampling temperature of the student (> 0)."})
    gkd_max_new_tokens: int = field(default=64, metadata={"help": "gkd: most tokens sampled per target (>= 1)."})
    gkd_divergence_temperature: float = field(
        default=1.0,
        metadata={
            "help": "gkd: temperature of the divergence on sampled targets (> 0). 1 (default) is the GKD paper's and "
            "TRL's objective: the divergence of the unscaled distributions, no T^2 factor; another value "
            "softens both distributions and multiplies by T^2, as kd does. Reference batches use --temperature."
        },
    )
    gkd_seq_kd: bool = field(
        default=False, metadata={"help": "gkd: off-policy batches use the teacher's samples instead of the references."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("lmbda", self.lmbda, 0.0, 1.0)
        check_range("gkd_temperature", self.gkd_temperature, 0.0, low_open=True)
        check_range("gkd_max_new_tokens", self.gkd_max_new_tokens, 1)
        check_range("gkd_divergence_temperature", self.gkd_divergence_temperature, 0.0, low_open=True)


def generated_to_labels(sequences: torch.Tensor, eos_token_id: int, pad_token_id: int) -> torch.Tensor:
    """Targets from ``generate()`` output of a T5-style model: the decoder start token (first column) is dropped,
    the first EOS is kept as a target, and everything after it (padding of rows that finished early) is -100."""
    tokens = sequences[:, 1:].clone()
    is_eos = tokens == eos_token_id
    after_first_eos = (is_eos.cumsum(dim=1) - is_eos.long()) > 0
    labels = tokens.masked_fill(after_first_eos, IGNORE_INDEX)
    # a row that never produced EOS keeps all its tokens; pads before any EOS cannot occur in generate() output
    return labels


def sample_targets(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    temperature: float,
    max_new_tokens: int,
    eos_token_id: int,
    pad_token_id: int,
) -> torch.Tensor:
    """Sampled targets (labels with -100 after EOS) for a batch of sources; the model's train/eval mode is kept."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            sequences = model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                do_sample=True,
                temperature=temperature,
                top_k=0,
                max_new_tokens=max_new_tokens,
                pad_token_id=pad_token_id,
                eos_token_id=eos_token_id,
            )
    finally:
        model.train(was_training)
    return generated_to_labels(sequences, eos_token_id, pad_token_id)


def sampled_targets(trainer: Any, model: Any, inputs: dict) -> dict | None:
    """With probability lmbda the student's samples (or, with seq_kd, the teacher's) replace a batch's targets."""
    config = trainer.method_config
    on_policy = trainer._gkd_rng.random() < config.lmbda
    if not on_policy and not config.gkd_seq_kd:
        return None
    generator = trainer.accelerator.unwrap_model(model if on_policy else trainer.teacher)
    tok = trainer.processing_class
    labels = sample_targets(
        generator,
        inputs["input_ids"],
        inputs["attention_mask"],
        config.gkd_temperature,
        config.gkd_max_new_tokens,
        tok.eos_token_id,
        tok.pad_token_id,
    )
    trainer.on_policy_batches += int(on_policy)
    student = trainer.accelerator.unwrap_model(model)
    return {
        "input_ids": inputs["input_ids"],
        "attention_mask": inputs["attention_mask"],
        "labels": labels,
        "decoder_input_ids": decoder_inputs_from_labels(student, labels),
    }


def setup(trainer: Any) -> None:
    trainer._gkd_rng = random.Random(trainer.args.seed * 1000 + trainer.args.process_index)  # per rank
    trainer.on_policy_batches = 0  # recorded in training_log.json


def sample_batches(trainer: Any, batches: list) -> bool:
    """The whole accumulation window's targets are sampled before its first forward, so the loss is normalised by
    the window's (and, with ``average_tokens_across_devices``, every process's) count of the targets actually
    trained on: gradient accumulation and DDP give the full-batch gradient, as for kd. True if any changed."""
    changed = False
    for i, batch in enumerate(batches):
        sampled = sampled_targets(trainer, trainer.model, trainer._prepare_inputs(batch))
        if sampled is not None:
            batches[i], changed = {**sampled, "gkd_sampled": True}, True
    return changed


def gkd_step(step: LossStep) -> tuple[DistillationLoss, Any]:
    """Sampled targets: the divergence only (no CE, the samples have no reference) at the GKD temperature (1: no
    T^2); reference batches: kd."""
    from llmdiet.distill.losses import distillation_loss

    if not step.sampled:
        return kd_loss(step)
    outputs = step.student()
    parts = distillation_loss(
        outputs.logits,
        step.teacher_logits(),
        step.labels,
        1.0,
        step.config.gkd_divergence_temperature,
        num_valid_tokens=step.num_items,
        **step.config.divergence_options(),
    )
    return parts, outputs


def card(args: DistillationArguments) -> str:
    source = "the teacher's samples" if args.gkd_seq_kd else "the references"
    return (
        f"gkd (on-policy generalised KD): with probability {args.lmbda} a batch's targets are the student's own "
        f"samples (temperature {args.gkd_temperature}) scored by the teacher with {divergence_text(args)} at "
        f"T = {args.gkd_divergence_temperature}; otherwise kd on {source}, alpha = {args.alpha}, "
        f"T = {args.temperature}"
    )


METHOD = register(
    DistillationMethod(
        name="gkd",
        config=GKDConfig,
        loss=gkd_step,
        card=card,
        teacher_cache=False,
        no_cache_reason="on-policy targets are sampled anew every step, so no teacher output can be cached",
        sample_batches=sample_batches,
        setup=setup,
        needs_teacher=lambda alpha, config: True,
        help="on-policy GKD (student samples with probability --lmbda, scored by the teacher with --divergence; "
        "else kd)",
    )
)
