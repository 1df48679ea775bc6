#!/usr/bin/env python
"""Publish a PerceptCLIP model on the Hugging Face Hub (the same command as `perceptclip push`).

python push_to_hub.py --run-dir runs/koniq --repo-id me/perceptclip-koniq            # training run
python push_to_hub.py --model-dir path/to/saved_model --repo-id me/model --private   # any saved model
python push_to_hub.py --from-official PerceptCLIP/PerceptCLIP_Emotions --repo-id me/emotions
python push_to_hub.py --run-dir runs/koniq --repo-id me/x --dry-run out/             # write the folder only
python push_to_hub.py --run-dir runs/koniq --repo-id me/x --space space/             # + a Space (the demo)
"""

import sys

from perceptclip_hf.cli.push import main

if __name__ == "__main__":
    sys.exit(main())
