"""`python -m perceptclip_hf.cli`: the `perceptclip` command."""

import sys

from . import main

sys.exit(main())
