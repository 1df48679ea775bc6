#!/usr/bin/env python
"""Train and evaluate PerceptCLIP with the paper's recipe (the same command as `perceptclip train`).

    python train.py --config configs/quickstart.yaml                      # offline, CPU, ~1 minute
    accelerate launch train.py --config configs/koniq10k.yaml --data_dir /data/koniq10k

Every value of the YAML config can be overridden on the command line (`--learning_rate 1e-4`, `--splits 0 1 2`).
"""

import sys

from perceptclip_hf.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
