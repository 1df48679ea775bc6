"""Loaders for image memorability sets (LaMem, THINGS memorability); ``label`` is higher = more memorable."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from datasets import Dataset

from .errors import DatasetFormatError, LoadReport, OnError, RowErrors, row_error
from .files import walk_images
from .records import PathLike, Record, build_dataset, parse_score, records_from_rows
from .tables import read_csv_header, read_csv_table, read_text_lines, require_dir

LAMEM_SPLIT_NAMES = ("train", "val", "test")
LAMEM_NUM_SPLITS = 5
THINGS_IMAGE_COLUMNS = ("file_path", "image_name", "image", "filename")


def lamem_root(data_dir: PathLike) -> Path:
    """The folder holding ``images/`` and ``splits/`` (``data_dir`` itself or ``data_dir/lamem``)."""
    root = Path(data_dir)
    if not (root / "splits").is_dir() and (root / "lamem" / "splits").is_dir():
        root = root / "lamem"
    return root


def lamem_split_file(data_dir: PathLike, part: str, split: int) -> Path:
    """``splits/<part>_<split>.txt`` (``part`` in train/val/test, ``split`` in 1..5)."""
    return lamem_root(data_dir) / "splits" / f"{part}_{split}.txt"


def read_lamem_split(path: PathLike) -> list[tuple[str, str, str]]:
    """``(where, filename, score text)`` for each ``<filename> <score>`` line of a LaMem split file."""
    return [(where, name, score) for where, (name, score) in read_text_lines(path, fields=2)]


def load_lamem(data_dir: PathLike, *, on_error: OnError = "raise", verify_images: bool = False) -> Dataset:
    """LaMem: every image listed in ``splits/{train,val,test}_{1..5}.txt``, sorted by file name.

    Scores of an image must agree across the 15 files. Use :func:`..splits.lamem_splits` for the splits.
    """
    root = lamem_root(data_dir)
    image_dir = require_dir(root / "images")
    errors = RowErrors(LoadReport("lamem"), on_error)
    scores: dict[str, tuple[float, str]] = {}
    listed: set[str] = set()  # sample_id numbers every listed image, skipped ones included
    for split in range(1, LAMEM_NUM_SPLITS + 1):
        for part in LAMEM_SPLIT_NAMES:
            for where, name, text in read_lamem_split(lamem_split_file(root, part, split)):
                listed.add(name)
                with errors.guard():
                    score = parse_score(text, where, "score")
                    if name in scores and abs(scores[name][0] - score) > 1e-6:
                        raise row_error(where, f"score {score} of {name} differs from {scores[name][1]}")
                    scores.setdefault(name, (score, where))
    records = [
        Record(str(image_dir / name), *scores[name], sample_id)
        for sample_id, name in enumerate(sorted(listed))
        if name in scores
    ]
    return build_dataset(records, name="lamem", root=image_dir, errors=errors, verify_images=verify_images)


def load_things(
    data_dir: PathLike,
    *,
    scores_file: PathLike | None = None,
    image_column: str | None = None,
    score_column: str = "cr",
    on_error: OnError = "raise",
    verify_images: bool = False,
) -> Dataset:
    """THINGS memorability: ``<concept>/<image>.jpg`` + a scores CSV (``cr`` = corrected recognition).

    ``scores_file`` defaults to the single ``*.csv`` in ``data_dir``; ``image_column`` to the first of
    ``file_path``/``image_name``/``image``/``filename`` present. A value that is not a path relative to
    ``data_dir`` is looked up by file name among the images under ``data_dir``.
    """
    root = require_dir(data_dir, "THINGS folder")
    csv_path = _single_csv(root) if scores_file is None else root / scores_file
    columns = read_csv_header(csv_path)
    if image_column is None:
        image_column = next((c for c in THINGS_IMAGE_COLUMNS if c in columns), None)
        if image_column is None:
            raise DatasetFormatError(
                f"{csv_path}: no image column among {list(THINGS_IMAGE_COLUMNS)}; found {columns}. "
                "Pass image_column=..."
            )
    rows = read_csv_table(csv_path, [image_column, score_column])
    errors = RowErrors(LoadReport("things"), on_error)
    records = records_from_rows(rows, errors, image_dir=root, name_column=image_column, label_column=score_column)
    by_name = _images_by_file_name(root)
    for record in records:
        if not os.path.isfile(record.image_path):
            record.image_path = by_name.get(Path(record.image_path).name, record.image_path)
    return build_dataset(
        records, name="things", root=root, errors=errors, verify_images=verify_images, num_source_rows=len(rows)
    )


def _single_csv(root: Path) -> Path:
    found = sorted(root.glob("*.csv"))
    if len(found) != 1:
        raise DatasetFormatError(
            f"{root}: expected exactly one scores .csv file, found {[p.name for p in found]}; pass scores_file=..."
        )
    return found[0]


def _images_by_file_name(root: Path) -> dict[str, str]:
    """File name -> path of every image under ``root``; names found twice map to nothing (ambiguous)."""
    images = walk_images(root).images
    counts = Counter(os.path.basename(path) for path in images)
    return {os.path.basename(path): path for path in images if counts[os.path.basename(path)] == 1}
