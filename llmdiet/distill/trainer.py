"""``DistillationTrainer``: a ``Seq2SeqTrainer`` whose loss is the chosen method's (``alpha*T^2*KD + (1-alpha)*CE``
for kd; see :mod:`llmdiet.distill.methods`).

The teacher is frozen (``eval()``, ``requires_grad_(False)``, ``torch.no_grad()``), prepared by
accelerate in evaluation mode (so never wrapped in DDP), and is not an attribute of the
student: checkpoints hold the student only. Teacher and student see the same encoder inputs,
attention mask and ``decoder_input_ids`` (the labels shifted right by the collator).

With a teacher cache (``llmdiet.distill.teacher_cache``) the batches carry the teacher's top-k
log-probabilities instead, no teacher is loaded, and the loss is taken on the (k+1)-way top-k + tail
distributions: :func:`~llmdiet.distill.losses.topk_distillation_loss` (kd, any divergence) or
:func:`~llmdiet.distill.losses.topk_dkd_loss` (dkd). gkd cannot use a cache (its targets are sampled).

The loss is normalised by the number of valid target tokens in the whole accumulated
(and, with ``average_tokens_across_devices``, all-process) batch that the Trainer passes as
``num_items_in_batch``, so gradient accumulation and DDP give the full-batch gradient.
CE and KD are logged separately next to the Trainer's ``loss`` (``ce``, ``kd``; ``eval_ce``,
``eval_kd``), so every ``report_to`` integration sees them. ``eval_loss`` is the same objective on the eval
rows also when generating (``predict_with_generate``), and the in-training generation uses the harness's
settings (``eval_generation``: 128 new tokens, greedy) so that in-training BLEU equals ``llmdiet eval``'s.
``--label_smoothing_factor`` smooths the CE term (and only it).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from transformers import PreTrainedModel, Seq2SeqTrainer

from llmdiet.compat import decoder_inputs_from_labels
from llmdiet.config import ConfigError
from llmdiet.distill.losses import DistillationLoss
from llmdiet.distill.methods import LossStep, get_method
from llmdiet.distill.sharding import prepare_frozen_teacher


class DistillationTrainer(Seq2SeqTrainer):
    """Dispatches the loss, the on-policy sampling and the model wrapping to the method's registry entry
    (:mod:`llmdiet.distill.methods`); everything shared (teacher handling, token normalisation, logging of the loss
    parts, the hidden-state term, saving two students) is here."""

    def __init__(
        self,
        *args: Any,
        teacher_model: PreTrainedModel | None = None,
        alpha: float = 0.5,
        temperature: float = 1.0,
        eval_generation: dict | None = None,
        method: str = "kd",
        method_config: Any = None,
        hidden_layers: dict | None = None,
        hidden_weight: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.method = get_method(method)
        self.method_config = method_config if method_config is not None else self.method.config()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.alpha, self.temperature = alpha, temperature
        # generate() settings of the in-training eval (max_new_tokens, num_beams): the harness's, by default
        self.eval_generation = dict(eval_generation or {"max_new_tokens": 128, "num_beams": 1})
        self.teacher = None
        if teacher_model is not None and (self.method.needs_teacher(alpha, self.method_config) or hidden_weight > 0):
            self._check_teacher(teacher_model)
            # sharded like the student under FSDP / ZeRO-3 launches; otherwise only placed on the device
            self.teacher = prepare_frozen_teacher(teacher_model, self.accelerator)
        if self.method.setup:
            self.method.setup(self)
        # We normalise by num_items_in_batch ourselves, so the Trainer must pass it and must not
        # divide again by the accumulation steps.
        self.model_accepts_loss_kwargs = True
        self._parts: dict[str, defaultdict] = {"train": defaultdict(float), "eval": defaultdict(float)}
        # shrink-and-fine-tune: block outputs of the student and of the teacher blocks they were copied from
        self.hidden_weight, self._hidden = hidden_weight, None
        if hidden_weight > 0:
            from llmdiet.distill.methods.shrink import hidden_state_hooks

            if self.teacher is None or not hidden_layers:
                raise ValueError("the hidden-state loss needs the live teacher and a copy_layers student")
            self._hidden = hidden_state_hooks(
                self.accelerator.unwrap_model(self.model), self.accelerator.unwrap_model(self.teacher), hidden_layers
            )

    def _check_teacher(self, teacher_model: PreTrainedModel) -> None:
        student_vocab = self.accelerator.unwrap_model(self.model).config.vocab_size
        if teacher_model.config.vocab_size != student_vocab:
            raise ConfigError(
                f"teacher vocab size {teacher_model.config.vocab_size} != student vocab size {student_vocab}: "
                "logit distillation needs a shared vocabulary"
            )
        if teacher_model.dtype == torch.float16:
            raise ValueError("the teacher must run in float32 or bfloat16: T5 overflows in float16")

    def get_batch_samples(self, epoch_iterator: Any, num_batches: Any, device: Any) -> Any:
        """Methods with on-policy targets (gkd) replace the window's targets before its first forward; the loss is
        then normalised by the count of the targets actually trained on."""
        batches, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        if self.method.sample_batches and batches and self.method.sample_batches(self, batches):
            num_items = self._get_num_items_in_batch(batches, device)
        return batches, num_items

    def compute_loss(self, model: Any, inputs: Any, return_outputs: Any = False, num_items_in_batch: Any = None) -> Any:
        sampled = bool(inputs.pop("gkd_sampled", None)) if isinstance(inputs, dict) else False
        labels = inputs["labels"]
        cached = {k: inputs[k] for k in ("teacher_topk_ids", "teacher_topk_logprobs") if k in inputs}
        model_inputs = {k: v for k, v in inputs.items() if k != "labels" and k not in cached}
        if "decoder_input_ids" not in model_inputs:
            student = self.accelerator.unwrap_model(model)
            model_inputs["decoder_input_ids"] = decoder_inputs_from_labels(student, labels)
        step = LossStep(
            trainer=self,
            model=model,
            inputs=model_inputs,
            labels=labels,
            num_items=num_items_in_batch,
            config=self.method_config,
            cached=cached or None,
            sampled=sampled,
        )
        parts, outputs = self.method.loss(step)
        hidden = None
        if self._hidden is not None and self.teacher is not None:
            from llmdiet.distill.methods.shrink import hidden_term

            hidden = hidden_term(self._hidden, model_inputs, labels)
        return self._finish(model, parts, outputs, num_items_in_batch, return_outputs, hidden)

    def _finish(
        self,
        model: Any,
        parts: DistillationLoss,
        outputs: Any,
        num_items_in_batch: Any,
        return_outputs: bool,
        hidden: torch.Tensor | None = None,
    ) -> Any:
        loss = parts.loss
        if num_items_in_batch is not None and self.args.average_tokens_across_devices:
            # num_items_in_batch counts all processes' tokens; DDP averages gradients over processes.
            loss = loss * self.accelerator.num_processes
        if hidden is not None:
            # a per-batch mean: divided by the accumulation steps (the Trainer does not), never by the process count
            steps = self.args.gradient_accumulation_steps if model.training else 1
            loss = loss + self.hidden_weight * hidden / steps

        # Running token-weighted sums of the parts for logging (local process).
        split = "train" if model.training else "eval"
        tokens = parts.num_tokens.float()
        scale = (num_items_in_batch if num_items_in_batch is not None else parts.num_tokens.clamp(min=1)).float()
        acc = self._parts[split]
        acc["ce"] += (parts.ce * scale).item()
        acc["kd"] += (parts.kd * scale).item()
        for name, value in (parts.parts or {}).items():
            acc[name] += (value * scale).item()
        if hidden is not None:
            acc["hidden"] += (hidden.detach() * scale).item()
        acc["tokens"] += tokens.item()
        outputs.loss = loss
        return (loss, outputs) if return_outputs else loss

    def _save(self, output_dir: str | None = None, state_dict: Any = None) -> Any:
        """dml: both students as ordinary models in ``student_a/`` and ``student_b/`` (checkpoints and final)."""
        from llmdiet.distill.mutual import MutualStudents, save_students

        model = self.accelerator.unwrap_model(self.model)
        if not isinstance(model, MutualStudents):
            return super()._save(output_dir, state_dict)
        import os

        output_dir = output_dir or self.args.output_dir or "."
        os.makedirs(output_dir, exist_ok=True)
        save_students(
            model, output_dir, self.processing_class, getattr(self.args, "save_safetensors", True)
        )  # v5: always
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

    def _load_from_checkpoint(self, resume_from_checkpoint: Any, model: Any = None) -> Any:
        from llmdiet.distill.mutual import MutualStudents, load_students

        target = self.accelerator.unwrap_model(model or self.model)
        if isinstance(target, MutualStudents):
            return load_students(target, resume_from_checkpoint)
        return super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_best_model(self) -> Any:
        from llmdiet.distill.mutual import MutualStudents, load_students

        target = self.accelerator.unwrap_model(self.model)
        if isinstance(target, MutualStudents):
            return load_students(target, str(self.state.best_model_checkpoint))
        return super()._load_best_model()

    def create_model_card(self, *args: Any, **kwargs: Any) -> Any:
        """``push_to_hub`` writes the Trainer's generic card into README.md; llmdiet's card (written by the job after
        training, with the method and provenance) is kept instead."""
        import os

        if os.path.exists(os.path.join(str(self.args.output_dir), "README.md")):
            return None
        return super().create_model_card(*args, **kwargs)

    def evaluate(
        self, eval_dataset: Any = None, ignore_keys: Any = None, metric_key_prefix: str = "eval", **gen_kwargs: Any
    ) -> Any:
        for key, value in self.eval_generation.items():  # explicit gen_kwargs win
            gen_kwargs.setdefault(key, value)
        return super().evaluate(
            eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix, **gen_kwargs
        )

    def prediction_step(
        self, model: Any, inputs: Any, prediction_loss_only: Any, ignore_keys: Any = None, **gen_kwargs: Any
    ) -> Any:
        """With ``predict_with_generate`` the parent computes the student's plain CE as the eval loss; here the eval
        loss is the training objective (distillation loss, teacher forward included), logged with its parts."""
        loss, generated, labels = super().prediction_step(
            model, inputs, prediction_loss_only, ignore_keys=ignore_keys, **gen_kwargs
        )
        if getattr(self.args, "predict_with_generate", False) and not prediction_loss_only and "labels" in inputs:
            with torch.no_grad():
                loss = self.compute_loss(model, self._prepare_inputs(inputs)).detach()
        return loss, generated, labels

    def _pop_parts(self, split: str) -> dict[str, float]:
        acc = self._parts[split]
        names = ["ce", "kd", *sorted(k for k in acc if k not in ("ce", "kd", "tokens"))]
        sums = torch.tensor([acc[n] for n in names] + [acc["tokens"]], dtype=torch.float64, device=self.args.device)
        if self.accelerator.num_processes > 1:
            sums = self.accelerator.reduce(sums, reduction="sum")
        acc.clear()
        *values, tokens = sums.tolist()
        if tokens == 0:
            return {}
        return {n: round(v / tokens, 6) for n, v in zip(names, values)}

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            logs.update(self._pop_parts("train"))
        elif "eval_loss" in logs:
            logs.update({f"eval_{k}": v for k, v in self._pop_parts("eval").items()})
        super().log(logs, start_time)
