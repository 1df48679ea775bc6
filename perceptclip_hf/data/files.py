"""The one folder walker: which files under a folder are images, and why each other file is not scored.

An image is a file with a known image extension, or a file whose first bytes are an image's (``.jfif``-like
or extension-less camera/web downloads). Hidden entries (name starts with ``.``: ``.DS_Store``, ``._x.jpg``,
``.git``) are not scored; symlinked folders are followed once (loop-safe). Every file found is reported.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass, field

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jfif", ".jpe", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")
SNIFF_BYTES = 16
_MAGIC = (  # how image files Pillow opens begin
    b"\xff\xd8\xff",  # JPEG / JFIF / EXIF
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"II*\x00",
    b"MM\x00*",
    b"II+\x00",
    b"MM\x00+",  # TIFF, BigTIFF
    b"\x00\x00\x00\x0cjP  \r\n\x87\n",
    b"\xff\x4f\xff\x51",  # JPEG 2000 (jp2 box, codestream)
    b"qoif",
)
_PATTERNS = re.compile(
    rb"BM.{4}\x00{4}"  # BMP: file size, then 4 reserved zero bytes
    rb"|RIFF.{4}WEBP"
    rb"|.{4}ftypavi[fs]"  # AVIF
    rb"|P[1-6]\s+(#|\d)",  # PBM / PGM / PPM: magic, whitespace, then a comment or the width
    re.DOTALL,
)

NOT_AN_IMAGE = "not an image"
HIDDEN_FILE = "hidden file"
HIDDEN_FOLDER = "hidden folder (not searched)"
VISITED_FOLDER = "symlink loop / already visited folder"
UNREADABLE_FOLDER = "unreadable folder"
UNREADABLE_FILE = "unreadable file"
BROKEN_LINK = "broken symlink"
LINK_LOOP = "symlink loop (the link leads back to itself)"
NOT_A_FILE = "not a regular file"


@dataclass
class WalkResult:
    """``images``: image paths in walk order; ``not_scored``: ``(path, reason)`` for every other entry found."""

    images: list[str] = field(default_factory=list)
    not_scored: list[tuple[str, str]] = field(default_factory=list)


def sniff_image(path: str | os.PathLike) -> bool:
    """Whether the first bytes of ``path`` are those of an image format Pillow opens (``False`` if unreadable)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(SNIFF_BYTES)
    except OSError:
        return False
    return head.startswith(_MAGIC) or bool(_PATTERNS.match(head))


def is_image_file(path: str | os.PathLike) -> bool:
    """A known image extension, or any other (or no) extension with image content (:func:`sniff_image`)."""
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS or sniff_image(path)


def link_problem(path: str | os.PathLike) -> str | None:
    """Why a symlink leads nowhere (:data:`LINK_LOOP`, :data:`BROKEN_LINK`), ``None`` for anything else."""
    if not os.path.islink(path):
        return None
    try:
        os.stat(path)
    except OSError as err:
        return LINK_LOOP if err.errno == errno.ELOOP else BROKEN_LINK
    return None


def walk_images(root: str | os.PathLike) -> WalkResult:
    """Every file under ``root``, recursively, each folder's entries in name order: images, and the rest with why.

    Symlinked folders are followed once (a folder already visited, e.g. a link to a parent, is reported instead
    of walked again). Hidden files are reported; hidden folders are reported and not searched. Paths start with
    ``root`` as given (links are not resolved). A ``root`` that is a file is classified alone.
    """
    root = os.fspath(root)
    if not os.path.lexists(root):
        raise FileNotFoundError(f"{root}: no such file or directory")
    result = WalkResult()
    if not os.path.isdir(root):
        _classify_file(root, result)
        return result
    _walk(root, {os.path.realpath(root)}, result)
    return result


def _walk(folder: str, visited: set[str], result: WalkResult) -> None:
    try:
        with os.scandir(folder) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
    except OSError:
        result.not_scored.append((folder, UNREADABLE_FOLDER))
        return
    for entry in entries:
        path = os.path.join(folder, entry.name)
        try:
            is_dir = entry.is_dir()
        except OSError:  # ELOOP: a link that cannot be resolved
            result.not_scored.append((path, link_problem(path) or UNREADABLE_FOLDER))
            continue
        if is_dir:
            if entry.name.startswith("."):
                result.not_scored.append((path, HIDDEN_FOLDER))
            elif os.path.realpath(path) in visited:
                result.not_scored.append((path, VISITED_FOLDER))
            else:
                visited.add(os.path.realpath(path))
                _walk(path, visited, result)
        elif entry.name.startswith("."):
            result.not_scored.append((path, HIDDEN_FILE))
        else:
            _classify_file(path, result, entry.is_file())


def _classify_file(path: str, result: WalkResult, is_file: bool | None = None) -> None:
    if not (os.path.isfile(path) if is_file is None else is_file):
        result.not_scored.append((path, link_problem(path) or NOT_A_FILE))
    elif is_image_file(path):
        result.images.append(path)
    else:
        result.not_scored.append((path, NOT_AN_IMAGE if os.access(path, os.R_OK) else UNREADABLE_FILE))
