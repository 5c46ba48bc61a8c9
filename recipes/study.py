"""The study in one command (see llmdiet/study/command.py and recipes/configs/).

python recipes/study.py --config recipes/configs/demo.yaml          # offline demo, ~10 minutes on 2 cores
python recipes/study.py --config recipes/configs/reference.yaml --list
accelerate launch recipes/study.py --config recipes/configs/reference.yaml --job train/alpha-0.5
"""

import sys

from llmdiet.cli import main

if __name__ == "__main__":
    sys.exit(main(["study", *sys.argv[1:]]))
