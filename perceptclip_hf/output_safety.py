"""Outputs that can be written, and files and folders that may be replaced: checked before any work, so a command
never fails late nor overwrites what it did not write. Every command's output checks live here: files
(:func:`check_writable`, :func:`check_not_read_only`, :func:`check_own_json`), folders of a command's reports
(:func:`check_own_folder`), a run's folder (:func:`check_writable_folder`) and folders that must hold nothing else
(:func:`check_free_folder`: a Hub repo folder, a Space)."""

from __future__ import annotations

import errno
import json
import os
import shutil
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


def check_not_read_only(paths, option: str, output: str | os.PathLike) -> None:
    """None of the existing ``paths`` (an output and the files beside it) is read-only."""
    for existing in map(Path, paths):
        if existing.exists() and not os.access(existing, os.W_OK):
            raise OutputError(f"{option} {output}: {existing} is read-only; choose another {option}")


def check_writable_folder(folder: str | os.PathLike | None, option: str = "--output_dir") -> None:
    """``folder`` is (or can be made) a folder this process can write in."""
    if not folder:
        raise OutputError(f"{option}: give the folder for checkpoints and results")
    path = Path(folder).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise OutputError(f"{option} {folder}: {existing} is a file, not a folder; give another {option}")
    problem = cannot_write_in(existing)
    if problem:
        raise OutputError(f"{option} {folder}: cannot write in {existing} ({problem}); give a folder you can write to")


def check_own_folder(out: Path, report_file: str, writer: str, option: str = "--out", create: bool = True) -> None:
    """The folder of `option` is new, empty or an earlier output of `writer` (its `report_file` names it): created
    here (``create``), before the model loads; a folder holding other files is left untouched."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"{option} {out} is a file; name a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / report_file).exists():
            raise OutputError(
                f"{option} {out} holds files not written by {writer}; they are left untouched: choose a "
                "new or empty folder"
            )
        check_own_json(out / report_file, writer, option)
    if not create:
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{option} {out}: cannot create it ({err.strerror}); choose another folder") from None


def check_free_folder(folder: Path, option: str, rewritten: tuple[str, ...] | None = None) -> None:
    """``folder`` is new or empty: what it holds would be uploaded with what is written. ``rewritten``: the files an
    earlier output of the same command holds, which may be there (with hidden files: a clone's ``.git``)."""
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{option} {folder} is a file; name a folder")
    names = sorted(path.name for path in folder.iterdir()) if folder.is_dir() else []
    if rewritten is not None:
        names = [name for name in names if name not in rewritten and not name.startswith(".")]
    if names:
        raise OutputError(
            f"{option} {folder} is not empty (it holds {', '.join(names[:3])}); they are left untouched: "
            "choose a new or empty folder"
        )


def is_disk_full(err: BaseException) -> bool:
    """``err`` says the disk (or the user's quota) is full."""
    return isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)


def disk_full(path: str | os.PathLike, kept: str, option: str = "--output") -> OutputError:
    """The one line for a disk that filled up while ``path`` was written: the file, the space left, what was kept
    and the fix."""
    folder = Path(path).absolute().parent
    try:
        free = f"{size_text(shutil.disk_usage(folder).free)} free in {folder}"
    except OSError:
        free = f"{folder}"
    return OutputError(f"{option} {path}: the disk is full ({free}); {kept}")


def size_text(size: int) -> str:
    """``"0 B"``, ``"12.0 KiB"``, ``"3.4 GiB"``."""
    value, unit = float(size), "B"
    for larger in ("KiB", "MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, larger
    return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"


__all__ = [
    "cannot_write_in",
    "check_free_folder",
    "check_not_read_only",
    "check_own_folder",
    "check_own_json",
    "check_writable",
    "check_writable_folder",
    "disk_full",
    "is_disk_full",
]
