"""Loaders for authentically distorted IQA sets (KonIQ-10k, LIVEC, SPAQ, FLIVE) and AGIQA-3K.

``label`` is the dataset's MOS as published (all higher-is-better). ``sample_id`` is the row number of
the label file (LIVEC: after dropping its 7 training images), the index LoDa's random splits refer to.
"""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset

from .errors import DatasetFormatError, LoadReport, OnError, RowErrors
from .records import PathLike, Record, build_dataset, parse_score, records_from_rows
from .tables import load_mat_variable, mat_strings, read_csv_table, read_xlsx_table, require_dir

KONIQ_CSV = "koniq10k_scores_and_distributions.csv"
KONIQ_RESOLUTIONS = ("1024x768", "512x384")
LIVEC_TRAINING_IMAGES = 7
SPAQ_XLSX = "Annotations/MOS and Image attribute scores.xlsx"


def load_koniq10k(
    data_dir: PathLike,
    *,
    resolution: str | None = None,
    score_column: str = "MOS",
    on_error: OnError = "raise",
    verify_images: bool = False,
) -> Dataset:
    """KonIQ-10k: ``koniq10k_scores_and_distributions.csv`` + ``1024x768/`` (or ``512x384/``).

    ``resolution`` picks the image folder (default: ``1024x768`` if present, else ``512x384``);
    ``score_column`` is ``"MOS"`` (1-5, LoDa) or ``"MOS_zscore"`` (0-100).
    """
    root = Path(data_dir)
    if resolution is None:
        resolution = next((r for r in KONIQ_RESOLUTIONS if (root / r).is_dir()), KONIQ_RESOLUTIONS[0])
    image_dir = require_dir(root / resolution)
    rows = read_csv_table(root / KONIQ_CSV, ["image_name", score_column])
    errors = RowErrors(LoadReport("koniq10k"), on_error)
    records = records_from_rows(rows, errors, image_dir=image_dir, name_column="image_name", label_column=score_column)
    return build_dataset(
        records, name="koniq10k", root=image_dir, errors=errors, verify_images=verify_images, num_source_rows=len(rows)
    )


def load_livec(data_dir: PathLike, *, on_error: OnError = "raise", verify_images: bool = False) -> Dataset:
    """LIVE In the Wild: ``Data/AllImages_release.mat`` + ``Data/AllMOS_release.mat`` + ``Images/``.

    The first 7 rows (the ``trainingImages``) are dropped, leaving 1,162 images (MOS 0-100).
    """
    root = Path(data_dir)
    image_dir = require_dir(root / "Images")
    names_file, mos_file = root / "Data" / "AllImages_release.mat", root / "Data" / "AllMOS_release.mat"
    names = mat_strings(load_mat_variable(names_file, "AllImages_release"))
    scores = load_mat_variable(mos_file, "AllMOS_release").ravel()
    if len(names) != len(scores):
        raise DatasetFormatError(f"{names_file}: {len(names)} names but {mos_file} has {len(scores)} scores")
    if len(names) <= LIVEC_TRAINING_IMAGES:
        raise DatasetFormatError(f"{names_file}: only {len(names)} entries; expected the 7 training images + 1,162")
    errors = RowErrors(LoadReport("livec"), on_error)
    records = []
    for sample_id, entry in enumerate(range(LIVEC_TRAINING_IMAGES, len(names))):
        where = f"{mos_file}: entry {entry + 1} ({names[entry]})"
        with errors.guard():
            score = parse_score(scores[entry], where)
            records.append(Record(str(image_dir / names[entry]), score, where, sample_id))
    return build_dataset(
        records,
        name="livec",
        root=image_dir,
        errors=errors,
        verify_images=verify_images,
        num_source_rows=len(names) - LIVEC_TRAINING_IMAGES,
    )


def load_spaq(data_dir: PathLike, *, on_error: OnError = "raise", verify_images: bool = False) -> Dataset:
    """SPAQ: ``TestImage/*.jpg`` + ``Annotations/MOS and Image attribute scores.xlsx`` (MOS 0-100).

    EXIF orientation is applied when images are opened (see :mod:`.images`).
    """
    root = Path(data_dir)
    image_dir = require_dir(root / "TestImage")
    rows = read_xlsx_table(root / SPAQ_XLSX, ["Image name", "MOS"])
    errors = RowErrors(LoadReport("spaq"), on_error)
    records = records_from_rows(rows, errors, image_dir=image_dir, name_column="Image name", label_column="MOS")
    return build_dataset(
        records, name="spaq", root=image_dir, errors=errors, verify_images=verify_images, num_source_rows=len(rows)
    )


def load_flive(data_dir: PathLike, *, on_error: OnError = "raise", verify_images: bool = False) -> Dataset:
    """FLIVE (PaQ-2-PiQ): ``database/labels_image.csv`` (``name,mos``; name includes the sub-folder)."""
    image_dir = require_dir(Path(data_dir) / "database")
    rows = read_csv_table(image_dir / "labels_image.csv", ["name", "mos"])
    errors = RowErrors(LoadReport("flive"), on_error)
    records = records_from_rows(rows, errors, image_dir=image_dir, name_column="name", label_column="mos")
    return build_dataset(
        records, name="flive", root=image_dir, errors=errors, verify_images=verify_images, num_source_rows=len(rows)
    )


def load_agiqa3k(
    data_dir: PathLike,
    *,
    score_column: str = "mos_quality",
    on_error: OnError = "raise",
    verify_images: bool = False,
) -> Dataset:
    """AGIQA-3K: ``data.csv`` + ``images/``; ``label`` = ``mos_quality`` (0-5), ``group`` = ``prompt``."""
    root = Path(data_dir)
    image_dir = require_dir(root / "images")
    rows = read_csv_table(root / "data.csv", ["name", "prompt", score_column])
    errors = RowErrors(LoadReport("agiqa3k"), on_error)
    records = records_from_rows(
        rows,
        errors,
        image_dir=image_dir,
        name_column="name",
        label_column=score_column,
        meta_columns={"group": "prompt"},
    )
    return build_dataset(
        records, name="agiqa3k", root=image_dir, errors=errors, verify_images=verify_images, num_source_rows=len(rows)
    )
