"""Distil a seq2seq teacher into a student (the reference study by default).

    accelerate launch recipes/distill.py --alpha 0.5                 # flan-T5-large -> flan-T5-small
    accelerate launch --num_processes 4 recipes/distill.py --alpha 0.5   # multi-GPU (DDP)
    python recipes/distill.py --preset demo                          # offline demo, tiny models
    python recipes/distill.py --config my_run.yaml --alpha 0.25      # YAML, flags win

Every option: ``python recipes/distill.py --help``. The work is done by ``llmdiet.distill.job``.
"""

import sys

from llmdiet.cli import main

if __name__ == "__main__":
    sys.exit(main(["distill", *sys.argv[1:]]))
