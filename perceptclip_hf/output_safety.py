"""Outputs that can be written, and files that may be replaced: checked before any work, so a command never fails
late nor overwrites a file it did not write."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import OutputError


def check_writable(path: str | os.PathLike, option: str = "--output") -> None:
    """``path`` can be created: not a folder, in an existing folder where this process can write."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{option} {path} is a folder; name a file inside it")
    folder = path.parent
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{option} {path}: {folder} is a file, not a folder; choose another {option}")
    if not folder.is_dir():
        raise OutputError(f"{option} {path}: folder {folder} does not exist; create it first (mkdir -p {folder})")
    problem = cannot_write_in(folder)
    if problem:
        raise OutputError(f"{option} {path}: cannot write in folder {folder} ({problem}); choose another {option}")


def cannot_write_in(folder: Path) -> str | None:
    """Why this process cannot create files in ``folder`` (``None`` if it can): tried with a probe file, since
    ``os.access`` says yes to root on a read-only file system."""
    probe = folder / f".perceptclip-{os.getpid()}.probe"
    try:
        probe.touch(exist_ok=False)
        probe.unlink()
    except FileExistsError:
        return None
    except OSError as err:
        return err.strerror or str(err)
    return None


def check_own_json(path: str | os.PathLike, writer: str, option: str = "--output") -> None:
    """An existing ``path`` may be replaced only if it is a JSON report of ``writer`` (its ``"writer"`` field)."""
    path = Path(path)
    if not path.exists():
        return
    try:
        owner = json.loads(path.read_text(encoding="utf-8")).get("writer")
    except (OSError, ValueError, AttributeError):
        owner = None
    if owner != writer:
        raise OutputError(f"{option} {path}: not written by {writer}; it is left untouched: choose another {option}")


__all__ = ["cannot_write_in", "check_own_json", "check_writable"]
