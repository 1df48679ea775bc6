"""Folders built once into a cache (an official checkpoint's conversion, a model's export for ``--backend``): built
in a temporary sibling and renamed into place, so a killed build leaves nothing half-written and two processes
building at once keep one copy. The caches live under ``$HF_HUB_CACHE`` (no torch here)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

TMP_PREFIX = ".tmp-"


def cache_root(name: str) -> Path:
    """``$HF_HUB_CACHE/<name>``."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / name


def build_once(folder: Path, build: Callable[[Path], object], done: str) -> Path:
    """``build(temporary)`` then a rename onto ``folder``; ``done``: the file a finished folder holds (another
    process that finished first keeps its copy). The temporary folder is removed whatever happens."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(folder.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-", dir=folder.parent))
    try:
        build(tmp)
        try:
            os.rename(tmp, folder)
        except OSError:  # another process finished first: keep its copy
            if not (folder / done).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def remove_stale_temporaries(root: Path) -> None:
    """Delete the temporary folders of builds whose process is gone (killed)."""
    for tmp in root.glob(f"{TMP_PREFIX}*"):
        try:
            os.kill(int(tmp.name[len(TMP_PREFIX) :].split("-")[0]), 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except (ValueError, PermissionError):
            continue


__all__ = ["build_once", "cache_root", "remove_stale_temporaries"]
