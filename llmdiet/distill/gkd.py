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

import torch

from llmdiet.distill.losses import IGNORE_INDEX


def generated_to_labels(sequences: torch.Tensor, eos_token_id: int, pad_token_id: int) -> torch.Tensor:
    """Targets from ``generate()`` output of a T5-style model: the decoder start token (first column) is dropped,
    the first EOS is kept as a target, and everything after it (padding of rows that finished early) is -100."""
    tokens = sequences[:, 1:].clone()
    is_eos = tokens == eos_token_id
    after_first_eos = (is_eos.cumsum(dim=1) - is_eos.long()) > 0
    labels = tokens.masked_fill(after_first_eos, IGNORE_INDEX)
    # a row that never produced EOS keeps all its tokens; pads before any EOS cannot occur in generate() output
    return labels


@torch.no_grad()
def sample_targets(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, temperature: float,
                   max_new_tokens: int, eos_token_id: int, pad_token_id: int) -> torch.Tensor:
    """Sampled targets (labels with -100 after EOS) for a batch of sources; the model's train/eval mode is kept."""
    was_training = model.training
    model.eval()
    try:
        sequences = model.generate(input_ids=input_ids, attention_mask=attention_mask, do_sample=True,
                                   temperature=temperature, top_k=0, max_new_tokens=max_new_tokens,
                                   pad_token_id=pad_token_id, eos_token_id=eos_token_id)
    finally:
        model.train(was_training)
    return generated_to_labels(sequences, eos_token_id, pad_token_id)
