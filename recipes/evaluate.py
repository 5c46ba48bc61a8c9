"""Evaluate one model on one or more eval sets: ``llmdiet eval`` as a script (same options, see ``--help``).

python recipes/evaluate.py --model runs/distill-demo --eval_set demo-en-fr demo-ko-en --output_dir runs/eval-student
python recipes/evaluate.py --preset demo
"""

import logging
import sys

from llmdiet.cli import user_errors
from llmdiet.evaluation.harness import main

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        sys.exit(main(sys.argv[1:], prog="python recipes/evaluate.py"))
    except user_errors() as err:  # user mistakes: a clear message, no traceback
        print(f"evaluate.py: error: {err}", file=sys.stderr)
        sys.exit(2)
