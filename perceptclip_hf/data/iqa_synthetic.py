"""Loaders for synthetically distorted IQA sets (LIVE, TID2013, KADID-10k).

Every row has a ``reference`` column (the pristine image's file name) used for content-disjoint splits,
and a ``distortion`` column. ``label`` keeps each file's published score unchanged:

- LIVE: DMOS, **lower is better** (``DatasetInfo.higher_is_better is False``; metrics/training negate it).
- TID2013: MOS 0-9, higher is better.  KADID-10k: the ``dmos`` column, 1-5, higher is better.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from datasets import Dataset

from .errors import DatasetFormatError, LoadReport, OnError, RowErrors, row_error
from .records import PathLike, Record, build_dataset, parse_score
from .tables import CaseInsensitiveDir, load_mat_variable, mat_strings, read_csv_table, read_text_lines, require_dir

# Row order of LIVE's dmos_realigned.mat: these folders concatenated, img1.bmp..img<count>.bmp each.
LIVE_FOLDER_COUNTS: dict[str, int] = {"jp2k": 227, "jpeg": 233, "wn": 174, "gblur": 174, "fastfading": 174}


def load_live(
    data_dir: PathLike,
    *,
    folder_counts: Mapping[str, int] | None = None,
    on_error: OnError = "raise",
    verify_images: bool = False,
) -> Dataset:
    """LIVE release 2: ``dmos_realigned.mat`` (``dmos_new``, ``orgs``) + ``refnames_all.mat``.

    Rows with ``orgs == 1`` (copies of the references) are dropped: 982 -> 779 images, 29 references.
    ``label`` is the raw DMOS (lower is better). ``folder_counts`` overrides the official per-folder
    image counts (in row order) for modified releases.
    """
    root = Path(data_dir)
    counts = dict(LIVE_FOLDER_COUNTS if folder_counts is None else folder_counts)
    dmos_file, refs_file = root / "dmos_realigned.mat", root / "refnames_all.mat"
    dmos = load_mat_variable(dmos_file, "dmos_new").ravel()
    originals = load_mat_variable(dmos_file, "orgs").ravel()
    references = mat_strings(load_mat_variable(refs_file, "refnames_all"))
    expected = sum(counts.values())
    for path, name, size in (
        (dmos_file, "dmos_new", len(dmos)),
        (dmos_file, "orgs", len(originals)),
        (refs_file, "refnames_all", len(references)),
    ):
        if size != expected:
            raise DatasetFormatError(
                f"{path}: {name} has {size} entries but the folders {counts} hold {expected} images"
            )
    for folder in counts:
        require_dir(root / folder, f"LIVE '{folder}' folder")
    errors = RowErrors(LoadReport("live"), on_error)
    records: list[Record] = []
    entry = sample_id = 0  # sample_id: position among the distorted rows, skipped ones included
    for folder, count in counts.items():
        for k in range(1, count + 1):
            where = f"{dmos_file}: entry {entry + 1} ({folder}/img{k}.bmp)"
            if int(originals[entry]) != 1:
                with errors.guard():
                    score = parse_score(dmos[entry], where, "dmos_new")
                    meta = {"reference": references[entry], "distortion": folder}
                    records.append(Record(str(root / folder / f"img{k}.bmp"), score, where, sample_id, meta))
                sample_id += 1
            entry += 1
    return build_dataset(
        records, name="live", root=root, errors=errors, verify_images=verify_images, num_source_rows=sample_id
    )


def load_tid2013(data_dir: PathLike, *, on_error: OnError = "raise", verify_images: bool = False) -> Dataset:
    """TID2013: ``mos_with_names.txt`` (``<MOS> <name>``) + ``distorted_images/`` + ``reference_images/``.

    File names are matched case-insensitively; the reference of ``i01_01_1.bmp`` is ``I01.BMP``.
    """
    root = Path(data_dir)
    distorted = CaseInsensitiveDir(require_dir(root / "distorted_images"))
    refs = CaseInsensitiveDir(root / "reference_images")
    lines = read_text_lines(root / "mos_with_names.txt", fields=2)
    errors = RowErrors(LoadReport("tid2013"), on_error)
    records = []
    for sample_id, (where, (mos, name)) in enumerate(lines):
        with errors.guard():
            score = parse_score(mos, where, "MOS")
            ref_id, distortion, level = _distortion_fields(name, where)
            meta = {"reference": refs.resolve(f"I{ref_id[1:]}.BMP").name, "distortion": distortion, "level": level}
            records.append(Record(str(distorted.resolve(name)), score, where, sample_id, meta))
    return build_dataset(
        records,
        name="tid2013",
        root=distorted.folder,
        errors=errors,
        verify_images=verify_images,
        num_source_rows=len(lines),
    )


def load_kadid10k(data_dir: PathLike, *, on_error: OnError = "raise", verify_images: bool = False) -> Dataset:
    """KADID-10k: ``dmos.csv`` (``dist_img,ref_img,dmos,var``) + ``images/``; ``dmos`` is 1-5, higher better."""
    root = Path(data_dir)
    image_dir = require_dir(root / "images")
    rows = read_csv_table(root / "dmos.csv", ["dist_img", "ref_img", "dmos"])
    errors = RowErrors(LoadReport("kadid10k"), on_error)
    records = []
    for sample_id, (where, row) in enumerate(rows):
        with errors.guard():
            score = parse_score(row["dmos"], where, "dmos")
            name = row["dist_img"].strip()
            _, distortion, level = _distortion_fields(name, where)
            meta = {"reference": row["ref_img"].strip(), "distortion": distortion, "level": level}
            records.append(Record(str(image_dir / name), score, where, sample_id, meta))
    return build_dataset(
        records, name="kadid10k", root=image_dir, errors=errors, verify_images=verify_images, num_source_rows=len(rows)
    )


def _distortion_fields(name: str, where: str) -> tuple[str, str, int]:
    """``i01_05_3.bmp`` / ``I01_05_03.png`` -> (``"i01"``, ``"05"``, 3)."""
    parts = Path(name).stem.split("_")
    if len(parts) != 3 or not all(p[-2:].isdigit() for p in parts[:2]) or not parts[2].isdigit():
        raise row_error(where, f"image name {name!r} is not '<ref>_<distortion>_<level>.<ext>'")
    return parts[0], parts[1], int(parts[2])
