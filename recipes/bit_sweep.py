"""2–8-bit sweep of teacher vs student weights, round-to-nearest vs GPFQ (see llmdiet/study/bit_sweep.py).

    python recipes/bit_sweep.py --preset demo        # after `llmdiet distill --preset demo`
    python recipes/bit_sweep.py --models google/flan-t5-large runs/distill --eval_set pgv-en-fr \
        --calibration_file train.jsonl --max_eval_samples 500
"""

import sys

from llmdiet.cli import main

if __name__ == "__main__":
    sys.exit(main(["bit-sweep", *sys.argv[1:]]))
