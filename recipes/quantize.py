"""Quantize a seq2seq model (the reference study: flan-T5-large with dynamic int8 by default).

    python recipes/quantize.py --preset reference                          # flan-T5-large, dynamic-int8
    python recipes/quantize.py --model google/flan-t5-large --method ct2-int8 --output_dir runs/large-ct2
    python recipes/quantize.py --preset demo --method onnx-static-int8     # offline demo teacher
    python recipes/quantize.py --list_methods

Every option: ``python recipes/quantize.py --help``. The work is done by ``llmdiet.quantize.job``.
"""

import sys

from llmdiet.cli import main

if __name__ == "__main__":
    sys.exit(main(["quantize", *sys.argv[1:]]))
