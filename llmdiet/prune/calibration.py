"""Calibration batches and the activation statistics the calibrated pruning methods read.

Rows of a parallel file run teacher-forced through the model (source with its task prefix, target as labels), so
encoder and decoder layers both see real inputs. Statistics are gathered with forward hooks, in float32, over the
target and source tokens that are not padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llmdiet.config import ConfigError
from llmdiet.data import DataError, read_hub_dataset, read_parallel_file, tokenize_rows


@dataclass
class CalibrationRows:
    file: str | None
    source_column: str = "en"
    target_column: str = "fr"
    prefix: str = ""
    count: int = 128
    batch_size: int = 16
    dataset: str | None = None  # the hub dataset's first ``count`` rows, when there is no file
    split: str = "train"

    def batches(self, tokenizer, model, method: str) -> list[dict]:
        """Padded batches (input_ids, attention_mask, labels, decoder_attention_mask) of the first ``count`` rows."""
        from transformers import DataCollatorForSeq2Seq

        if self.file:
            rows = read_parallel_file(self.file, self.source_column, self.target_column)[: self.count]
        elif self.dataset:
            try:
                rows = read_hub_dataset(
                    self.dataset, self.source_column, self.target_column, split=self.split, stop=self.count
                )
            except DataError as err:
                raise ConfigError(
                    f"--method {method} reads activations and --calibration_dataset {self.dataset} could not be read "
                    f"({str(err).split('. ')[0]}): give --calibration_file (training rows)"
                ) from None
        else:
            raise ConfigError(f"--method {method} reads activations: give --calibration_file (training rows)")
        dataset, _ = tokenize_rows(rows, tokenizer, self.prefix, 256, 256)
        collate = DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100)
        out = []
        for start in range(0, len(dataset), self.batch_size):
            batch = dict(collate([dataset[j] for j in range(start, min(start + self.batch_size, len(dataset)))]))
            batch["decoder_attention_mask"] = (batch["labels"] != -100).long()
            out.append(batch)
        return out

    def describe(self) -> dict:
        return {
            "file": self.file or f"{self.dataset}[{self.split}]",
            "columns": [self.source_column, self.target_column],
            "prefix": self.prefix,
            "rows": self.count,
        }


def run_batches(model, batches: list[dict]) -> None:
    """Teacher-forced forward passes (the hooks installed by the caller record what they need)."""
    model.eval()
    with torch.no_grad():
        for batch in batches:
            inputs = {k: v for k, v in batch.items() if k != "decoder_input_ids"}
            model(**inputs)


CROSS_ATTENTION_INPUTS = ("EncDecAttention.k", "EncDecAttention.v", "encoder_attn.k_proj", "encoder_attn.v_proj")


def token_mask(module_name: str, batch: dict) -> torch.Tensor:
    """(batch, length) bool: the real tokens of what ``module_name`` reads: the decoder's tokens in the decoder,
    except cross-attention keys and values, which read the encoder's output."""
    in_decoder = "decoder" in module_name.split(".")
    if in_decoder and not module_name.endswith(CROSS_ATTENTION_INPUTS):
        return batch["decoder_attention_mask"].bool()
    return batch["attention_mask"].bool()


def run_hooked(model, batches: list[dict], handles: list, current: dict) -> None:
    """Teacher-forced passes over ``batches`` with hooks already installed (``handles``), which read the batch being
    run from ``current["batch"]`` (for its padding masks); the hooks are removed afterwards, also on an error."""
    try:
        for batch in batches:
            current["batch"] = batch
            run_batches(model, [batch])
    finally:
        for handle in handles:
            handle.remove()
