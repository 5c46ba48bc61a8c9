"""``DistillationTrainer``: a ``Seq2SeqTrainer`` whose loss is ``alpha*T^2*KD + (1-alpha)*CE``.

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

import torch
from transformers import PreTrainedModel, Seq2SeqTrainer

from llmdiet.distill.losses import (
    IGNORE_INDEX, distillation_loss, dkd_loss, hidden_state_loss, mutual_learning_loss, topk_distillation_loss,
    topk_dkd_loss,
)


class DistillationTrainer(Seq2SeqTrainer):
    def __init__(self, *args, teacher_model: PreTrainedModel | None = None, alpha: float = 0.5,
                 temperature: float = 1.0, eval_generation: dict | None = None, method: str = "kd",
                 loss_options: dict | None = None, hidden_layers: dict | None = None, hidden_weight: float = 0.0,
                 **kwargs):
        super().__init__(*args, **kwargs)
        if method not in ("kd", "dkd", "gkd", "dml"):
            raise ValueError(f"unknown method '{method}' (use kd, dkd, gkd or dml)")
        # kd/gkd: divergence, jsd_beta, skew_alpha; dkd: dkd_alpha, dkd_beta; gkd also takes its ``gkd`` options
        self.method, self.loss_options = method, dict(loss_options or {})
        self.gkd = self.loss_options.pop("gkd", None)
        if self.gkd is not None:
            self.gkd.setdefault("divergence_temperature", 1.0)
        self.dml_teacher_weight = self.loss_options.pop("dml_teacher_weight", 0.0)
        if method == "gkd":
            import random

            self._gkd_rng = random.Random(self.args.seed * 1000 + self.args.process_index)  # per rank
            self.on_policy_batches = 0
        # generate() settings of the in-training eval (max_new_tokens, num_beams): the harness's, by default
        self.eval_generation = dict(eval_generation or {"max_new_tokens": 128, "num_beams": 1})
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.alpha, self.temperature = alpha, temperature
        self.teacher = None
        needs_teacher = (alpha > 0 and method != "dml") or method in ("dkd", "gkd") or hidden_weight > 0 \
            or (method == "dml" and self.dml_teacher_weight > 0)
        if needs_teacher and teacher_model is not None:
            student_vocab = self.accelerator.unwrap_model(self.model).config.vocab_size
            if teacher_model.config.vocab_size != student_vocab:
                raise ValueError(
                    f"teacher vocab size {teacher_model.config.vocab_size} != student vocab size {student_vocab}: "
                    "logit distillation needs a shared vocabulary"
                )
            if teacher_model.dtype == torch.float16:
                raise ValueError("the teacher must run in float32 or bfloat16: T5 overflows in float16")
            teacher_model.eval().requires_grad_(False)
            self.teacher = self.accelerator.prepare_model(teacher_model, evaluation_mode=True)
        # We normalise by num_items_in_batch ourselves, so the Trainer must pass it and must not
        # divide again by the accumulation steps.
        self.model_accepts_loss_kwargs = True
        self._parts = {"train": defaultdict(float), "eval": defaultdict(float)}
        # shrink-and-fine-tune: block outputs of the student and of the teacher blocks they were copied from
        self.hidden_weight, self._hidden = hidden_weight, None
        if hidden_weight > 0:
            if self.teacher is None or not hidden_layers:
                raise ValueError("the hidden-state loss needs the live teacher and a copy_layers student")
            self._hidden = self._register_hidden_hooks(hidden_layers)

    def _register_hidden_hooks(self, layers: dict) -> dict:
        """Forward hooks that keep each copied student block's output and its teacher block's output."""
        store: dict = {"student": {}, "teacher": {}}
        student = self.accelerator.unwrap_model(self.model)
        teacher = self.accelerator.unwrap_model(self.teacher)
        for stack in ("encoder", "decoder"):
            for i, t in enumerate(layers[stack]):
                for role, model, index in (("student", student, i), ("teacher", teacher, t)):
                    block = getattr(model, stack).block[index]
                    block.register_forward_hook(lambda m, a, out, role=role, key=(stack, i): store[role].__setitem__(key, out[0]))
        store["keys"] = [(stack, i) for stack in ("encoder", "decoder") for i in range(len(layers[stack]))]
        return store

    def _hidden_term(self, inputs: dict, labels: torch.Tensor) -> torch.Tensor:
        store = self._hidden
        masks = {"encoder": inputs["attention_mask"], "decoder": labels != IGNORE_INDEX}
        keys = store["keys"]
        return hidden_state_loss([store["student"][k] for k in keys], [store["teacher"][k] for k in keys],
                                 [masks[k[0]] for k in keys])

    def _gkd_targets(self, model, inputs) -> dict | None:
        """GKD: with probability lmbda the student's samples (or, with seq_kd, the teacher's) replace the targets."""
        from llmdiet.distill.gkd import sample_targets

        on_policy = self._gkd_rng.random() < self.gkd["lmbda"]
        if not on_policy and not self.gkd["seq_kd"]:
            return None
        generator = self.accelerator.unwrap_model(model if on_policy else self.teacher)
        tok = self.processing_class
        labels = sample_targets(generator, inputs["input_ids"], inputs["attention_mask"], self.gkd["temperature"],
                                self.gkd["max_new_tokens"], tok.eos_token_id, tok.pad_token_id)
        self.on_policy_batches += int(on_policy)
        shift = self.accelerator.unwrap_model(model)._shift_right
        return {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"], "labels": labels,
                "decoder_input_ids": shift(labels.masked_fill(labels == IGNORE_INDEX, tok.pad_token_id))}

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """gkd: the whole accumulation window's targets are sampled before its first forward, so the loss is
        normalised by the window's (and, with ``average_tokens_across_devices``, every process's) count of the
        targets actually trained on: gradient accumulation and DDP give the full-batch gradient, as for kd."""
        batches, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        if self.method != "gkd" or not batches:
            return batches, num_items
        changed = False
        for i, batch in enumerate(batches):
            sampled = self._gkd_targets(self.model, self._prepare_inputs(batch))
            if sampled is not None:
                batches[i], changed = {**sampled, "gkd_sampled": True}, True
        if changed:
            num_items = self._get_num_items_in_batch(batches, device)
        return batches, num_items

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        sampled = inputs.pop("gkd_sampled", None) if isinstance(inputs, dict) else None
        labels = inputs["labels"]
        cached = {k: inputs[k] for k in ("teacher_topk_ids", "teacher_topk_logprobs") if k in inputs}
        model_inputs = {k: v for k, v in inputs.items() if k != "labels" and k not in cached}
        if "decoder_input_ids" not in model_inputs:
            shift = self.accelerator.unwrap_model(model)._shift_right
            model_inputs["decoder_input_ids"] = shift(labels.masked_fill(labels == IGNORE_INDEX, 0))
        if self.method == "dml":
            return self._mutual_loss(model, model_inputs, labels, num_items_in_batch, return_outputs)
        outputs = model(**model_inputs, use_cache=False)
        if cached and self.method == "dkd":  # teacher top-k log-probs from llmdiet.distill.teacher_cache
            parts = topk_dkd_loss(outputs.logits, cached["teacher_topk_ids"], cached["teacher_topk_logprobs"], labels,
                                  self.temperature, num_valid_tokens=num_items_in_batch,
                                  label_smoothing=self.args.label_smoothing_factor, **self.loss_options)
        elif cached and self.alpha > 0:
            parts = topk_distillation_loss(outputs.logits, cached["teacher_topk_ids"], cached["teacher_topk_logprobs"],
                                           labels, self.alpha, self.temperature, num_valid_tokens=num_items_in_batch,
                                           label_smoothing=self.args.label_smoothing_factor, **self.loss_options)
        else:
            if self.teacher is not None:
                with torch.no_grad():
                    teacher_logits = self.teacher(**model_inputs, use_cache=False).logits
            elif self.alpha > 0 or self.method in ("dkd", "gkd"):
                raise ValueError("this loss needs a teacher_model or cached teacher log-probs in the batch")
            else:  # alpha == 0: plain fine-tuning, no teacher forward
                teacher_logits = outputs.logits.detach()
            if self.method == "dkd":
                parts = dkd_loss(outputs.logits, teacher_logits, labels, self.temperature,
                                 num_valid_tokens=num_items_in_batch, label_smoothing=self.args.label_smoothing_factor,
                                 **self.loss_options)
            elif sampled:  # gkd on sampled targets: the divergence only (no CE), at the GKD temperature (1: no T^2)
                parts = distillation_loss(outputs.logits, teacher_logits, labels, 1.0, self.gkd["divergence_temperature"],
                                          num_valid_tokens=num_items_in_batch, **self.loss_options)
            else:  # kd, and gkd's reference batches (kd)
                parts = distillation_loss(outputs.logits, teacher_logits, labels, self.alpha, self.temperature,
                                          num_valid_tokens=num_items_in_batch,
                                          label_smoothing=self.args.label_smoothing_factor, **self.loss_options)
        hidden = self._hidden_term(model_inputs, labels) if self._hidden is not None and self.teacher is not None else None
        return self._finish(model, parts, outputs, num_items_in_batch, return_outputs, hidden)

    def _mutual_loss(self, model, model_inputs, labels, num_items_in_batch, return_outputs):
        out_a, out_b = model(**model_inputs, use_cache=False, both=True)
        teacher_logits = None
        if self.teacher is not None and self.dml_teacher_weight > 0:
            with torch.no_grad():
                teacher_logits = self.teacher(**model_inputs, use_cache=False).logits
        parts = mutual_learning_loss(out_a.logits, out_b.logits, labels, self.alpha, self.temperature,
                                     num_valid_tokens=num_items_in_batch,
                                     label_smoothing=self.args.label_smoothing_factor, teacher_logits=teacher_logits,
                                     teacher_weight=self.dml_teacher_weight)
        return self._finish(model, parts, out_a, num_items_in_batch, return_outputs)

    def _finish(self, model, parts, outputs, num_items_in_batch, return_outputs, hidden=None):
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

    def _save(self, output_dir: str | None = None, state_dict=None):
        """dml: both students as ordinary models in ``student_a/`` and ``student_b/`` (checkpoints and final)."""
        from llmdiet.distill.mutual import MutualStudents, save_students

        model = self.accelerator.unwrap_model(self.model)
        if not isinstance(model, MutualStudents):
            return super()._save(output_dir, state_dict)
        import os

        output_dir = output_dir or self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        save_students(model, output_dir, self.processing_class, self.args.save_safetensors)
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        from llmdiet.distill.mutual import MutualStudents, load_students

        target = self.accelerator.unwrap_model(model or self.model)
        if isinstance(target, MutualStudents):
            return load_students(target, resume_from_checkpoint)
        return super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_best_model(self):
        from llmdiet.distill.mutual import MutualStudents, load_students

        target = self.accelerator.unwrap_model(self.model)
        if isinstance(target, MutualStudents):
            return load_students(target, self.state.best_model_checkpoint)
        return super()._load_best_model()

    def create_model_card(self, *args, **kwargs):
        """``push_to_hub`` writes the Trainer's generic card into README.md; llmdiet's card (written by the job after
        training, with the method and provenance) is kept instead."""
        import os

        if os.path.exists(os.path.join(self.args.output_dir, "README.md")):
            return None
        return super().create_model_card(*args, **kwargs)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval", **gen_kwargs):
        for key, value in self.eval_generation.items():  # explicit gen_kwargs win
            gen_kwargs.setdefault(key, value)
        return super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix, **gen_kwargs)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None, **gen_kwargs):
        """With ``predict_with_generate`` the parent computes the student's plain CE as the eval loss; here the eval
        loss is the training objective (distillation loss, teacher forward included), logged with its parts."""
        loss, generated, labels = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys,
                                                          **gen_kwargs)
        if self.args.predict_with_generate and not prediction_loss_only and "labels" in inputs:
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
