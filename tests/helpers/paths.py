"""Where things are: the checkout, the shared data beside it, the quickstart recipe."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DIR = REPO_ROOT.parent / "shared"
AGIQA_DIR = SHARED_DIR / "data" / "agiqa3k"
QUICKSTART = REPO_ROOT / "configs" / "quickstart.yaml"
