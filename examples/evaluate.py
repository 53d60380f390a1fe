#!/usr/bin/env python
"""`moscale evaluate` (`moscale.evaluation.evaluate_cli`) as a script for `torchrun` and `accelerate launch`.

    torchrun --nproc_per_node 2 examples/evaluate.py --model path/to/pipeline --data_dir data/HumanML3D ...

`python examples/evaluate.py --help` lists the options; `moscale evaluate` is the same command on one process.
"""

from moscale.evaluation.evaluate_cli import command_line

if __name__ == "__main__":
    command_line()
