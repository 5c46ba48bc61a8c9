"""Alpha sweep: distil once per alpha, evaluate every student, compare (see llmdiet/study/alpha_sweep.py).

accelerate launch recipes/alpha_sweep.py --alphas 0 0.25 0.5 0.75 1 --eval_set pgv-en-fr pgv-fr-en
python recipes/alpha_sweep.py --preset demo
"""

import sys

from llmdiet.cli import main

if __name__ == "__main__":
    sys.exit(main(["alpha-sweep", *sys.argv[1:]]))
