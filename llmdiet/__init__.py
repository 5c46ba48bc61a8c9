"""llmdiet: knowledge distillation and quantization of Hugging Face seq2seq translation models."""

import logging as _logging

__version__ = "0.1.0"

# transformers imports torchao when it is installed; on a CPU-only machine torchao then logs that
# its CUDA kernels cannot load and torch logs pytree deprecations, at every start. Neither matters
# for llmdiet (the GPU int8 backend checks for CUDA itself), so keep them out of users' consoles.
for _name in ("torchao", "torch.utils._pytree"):
    _logging.getLogger(_name).setLevel(_logging.ERROR)
