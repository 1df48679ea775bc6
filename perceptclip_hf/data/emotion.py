"""Loaders for image emotion sets (EmoSet-118K, EmotionROI); ``label`` is a ``ClassLabel``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from datasets import Dataset

from ..modeling import EMOTION_LABELS
from .errors import DatasetFormatError, LoadReport, OnError, RowErrors, row_error
from .records import PathLike, Record, build_dataset, scan_class_folders
from .tables import read_text, read_text_lines

EMOSET_CLASSES = EMOTION_LABELS  # EmoSet's label2idx order is the official models' label order
EMOSET_POSITIVE = EMOSET_CLASSES[:4]
EMOSET_SPLIT_FILES = {"train": "train.json", "validation": "val.json", "test": "test.json"}
EMOTIONROI_CLASSES = ("anger", "disgust", "fear", "joy", "sadness", "surprise")
EMOTIONROI_POSITIVE = ("joy", "surprise")
EMOTIONROI_SPLIT_FILES = {"train": "training.txt", "test": "testing.txt"}


def load_json(path: PathLike):
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise DatasetFormatError(f"{path}: invalid JSON ({err})") from err


def emoset_class_names(data_dir: PathLike) -> list[str]:
    """Class names ordered by ``info.json["emotion"]["label2idx"]``."""
    info_path = Path(data_dir) / "info.json"
    try:
        label2idx = load_json(info_path)["emotion"]["label2idx"]
    except (KeyError, TypeError):
        raise DatasetFormatError(f"{info_path}: expected info['emotion']['label2idx']") from None
    if sorted(label2idx.values()) != list(range(len(label2idx))):
        raise DatasetFormatError(f"{info_path}: label2idx values {sorted(label2idx.values())} are not 0..n-1")
    return sorted(label2idx, key=label2idx.get)


def load_emoset(
    data_dir: PathLike,
    *,
    splits: Sequence[str] = ("train", "validation", "test"),
    on_error: OnError = "raise",
    verify_images: bool = False,
) -> Dataset:
    """EmoSet-118K: rows of ``train.json``, ``val.json``, ``test.json`` (in that order), ``split`` column.

    Each json entry is ``[emotion, image_id, image_path, annotation_path]``; classes follow
    ``info.json`` (amusement, awe, contentment, excitement, anger, disgust, fear, sadness).
    """
    root = Path(data_dir)
    class_names = emoset_class_names(root)
    errors = RowErrors(LoadReport("emoset"), on_error)
    records: list[Record] = []
    sample_id = 0
    for split in splits:
        if split not in EMOSET_SPLIT_FILES:
            raise ValueError(f"unknown EmoSet split {split!r}; choose from {list(EMOSET_SPLIT_FILES)}")
        path = root / EMOSET_SPLIT_FILES[split]
        entries = load_json(path)
        if not isinstance(entries, list):
            raise DatasetFormatError(f"{path}: expected a list of [emotion, image_id, image_path, annotation_path]")
        for number, entry in enumerate(entries):
            where = f"{path}: entry {number}"
            with errors.guard():
                if not (isinstance(entry, list) and len(entry) == 4):
                    raise row_error(where, f"expected [emotion, image_id, image_path, annotation_path], got {entry!r}")
                emotion, image_id, image_path, _ = entry
                if emotion not in class_names:
                    raise row_error(where, f"emotion {emotion!r} is not one of {class_names}")
                meta = {"image_id": str(image_id), "split": split}
                records.append(Record(str(root / image_path), class_names.index(emotion), where, sample_id, meta))
            sample_id += 1
    return build_dataset(
        records,
        name="emoset",
        root=root,
        errors=errors,
        class_names=class_names,
        verify_images=verify_images,
        num_source_rows=sample_id,
    )


def load_emotionroi(data_dir: PathLike, *, on_error: OnError = "raise", verify_images: bool = False) -> Dataset:
    """EmotionROI: ``images/<emotion>/*.jpg`` (6 classes: anger, disgust, fear, joy, sadness, surprise; images
    are found as by :func:`.custom.load_imagefolder`).

    ``split`` is ``train``/``test`` from ``training_testing_split/{training,testing}.txt`` when present
    (``""`` for unlisted images); the paper's protocol is 5 random 75/20/5 splits (:func:`..splits.random_splits`).
    """
    root = Path(data_dir)
    errors = RowErrors(LoadReport("emotionroi"), on_error)
    class_names, samples = scan_class_folders(root / "images", EMOTIONROI_CLASSES, report=errors.report)
    official = _emotionroi_official_split(root, {p.relative_to(root / "images").as_posix() for _, p in samples}, errors)
    records = []
    for sample_id, (label, path) in enumerate(samples):
        name = path.relative_to(root / "images").as_posix()
        records.append(Record(str(path), label, str(path), sample_id, {"split": official.get(name, "")}))
    return build_dataset(
        records,
        name="emotionroi",
        root=root / "images",
        errors=errors,
        class_names=class_names,
        verify_images=verify_images,
    )


def _emotionroi_official_split(root: Path, names: set[str], errors: RowErrors) -> dict[str, str]:
    folder = root / "training_testing_split"
    if not folder.is_dir():
        return {}
    assignment: dict[str, str] = {}
    for split, file_name in EMOTIONROI_SPLIT_FILES.items():
        for where, (name,) in read_text_lines(folder / file_name, fields=1):
            with errors.guard():
                if name not in names:
                    raise row_error(where, f"{name} is not an image under images/<emotion>/")
                if name in assignment:
                    raise row_error(where, f"{name} is listed in both training and testing")
                assignment[name] = split
    return assignment
