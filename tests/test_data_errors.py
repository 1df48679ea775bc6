"""Bad input gives a clear error naming the file and row, or a counted, logged skip (on_error="skip")."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from datasets import Dataset

from perceptclip_hf.data import (
    DatasetFormatError,
    get_load_report,
    load_emoset,
    load_emotionroi,
    load_flive,
    load_kadid10k,
    load_koniq10k,
    load_live,
    load_livec,
    load_spaq,
    load_table,
    load_tid2013,
    splits_from_file,
)
from perceptclip_hf.preprocessing import IQATestTransform, with_image_transform
from tests.helpers.datasets import (
    KONIQ_HEADER,
    LIVE_COUNTS,
    make_emoset,
    make_emotionroi,
    make_flive,
    make_kadid,
    make_koniq,
    make_live,
    make_livec,
    make_spaq,
    make_tid2013,
    write_csv,
)

CSV = "koniq10k_scores_and_distributions.csv"


def _set_koniq_mos(root: Path, row: int, value: str) -> None:
    lines = (root / CSV).read_text().splitlines()
    fields = lines[row + 1].split(",")
    fields[KONIQ_HEADER.index("MOS")] = value
    lines[row + 1] = ",".join(fields)
    (root / CSV).write_text("\n".join(lines) + "\n")


def test_missing_image_raises_or_is_counted(tmp_path, caplog):
    make_koniq(tmp_path)
    (tmp_path / "1024x768" / "1002.jpg").unlink()
    with pytest.raises(DatasetFormatError, match=rf"{CSV}: line 4: image file .*1002.jpg not found"):
        load_koniq10k(tmp_path)
    with caplog.at_level(logging.WARNING, logger="perceptclip_hf.data"):
        ds = load_koniq10k(tmp_path, on_error="skip")
    report = get_load_report(ds)
    assert len(ds) == 5 and report.num_skipped == 1 and report.num_source_rows == 6
    assert "1002.jpg" in report.skipped[0] and "1002.jpg" in caplog.text
    assert 2 not in ds["sample_id"][:]  # other rows keep their sample ids
    assert get_load_report(ds.select([0])).num_skipped == 1  # the report survives select


def test_corrupt_image_detected_with_verify_images(tmp_path):
    make_koniq(tmp_path)
    (tmp_path / "1024x768" / "1001.jpg").write_bytes(b"not a jpeg")
    assert len(load_koniq10k(tmp_path)) == 6  # existence only by default
    with pytest.raises(DatasetFormatError, match=r"line 3: .*1001.jpg: cannot decode image"):
        load_koniq10k(tmp_path, verify_images=True)
    assert get_load_report(load_koniq10k(tmp_path, verify_images=True, on_error="skip")).num_skipped == 1


def test_corrupt_image_at_transform_time_names_the_file(tmp_path):
    make_koniq(tmp_path, n=2)
    (tmp_path / "1024x768" / "1001.jpg").write_bytes(b"\xff\xd8 truncated")
    ds = with_image_transform(load_koniq10k(tmp_path), IQATestTransform(32, num_crops=2))
    assert ds[0]["pixel_values"].shape == (2, 3, 32, 32)
    with pytest.raises(DatasetFormatError, match="1001.jpg: cannot decode image"):
        ds[1]


@pytest.mark.parametrize(
    "value, problem",
    [("nan", r"label is nan \(not a finite number\)"), ("abc", "'abc' is not a number"), ("", "label is empty")],
)
def test_bad_label_names_file_and_line(tmp_path, value, problem):
    make_koniq(tmp_path)
    _set_koniq_mos(tmp_path, 3, value)
    with pytest.raises(DatasetFormatError, match=rf"{CSV}: line 5: .*{problem}; fix the file or pass on_error='skip'"):
        load_koniq10k(tmp_path)
    assert get_load_report(load_koniq10k(tmp_path, on_error="skip")).num_skipped == 1


def test_non_numeric_mos_in_spaq_xlsx_names_the_row(tmp_path):
    import openpyxl

    make_spaq(tmp_path, rotated_first=False)
    path = tmp_path / "Annotations" / "MOS and Image attribute scores.xlsx"
    workbook = openpyxl.load_workbook(path)
    workbook.active["B3"] = "n/a"
    workbook.save(path)
    with pytest.raises(DatasetFormatError, match=r"scores.xlsx: row 3: label 'n/a' is not a number"):
        load_spaq(tmp_path)


def test_missing_column_lists_found_columns(tmp_path):
    make_koniq(tmp_path)
    with pytest.raises(DatasetFormatError, match=r"missing column\(s\) \['MOS_z'\]; found \['image_name'"):
        load_koniq10k(tmp_path, score_column="MOS_z")


def test_missing_label_file_is_named(tmp_path):
    make_flive(tmp_path)
    (tmp_path / "database" / "labels_image.csv").unlink()
    with pytest.raises(DatasetFormatError, match=r"labels_image.csv: label file not found"):
        load_flive(tmp_path)


def test_missing_mat_variable_lists_variables(tmp_path):
    make_livec(tmp_path)
    scipy.io.savemat(tmp_path / "Data" / "AllMOS_release.mat", {"MOS": np.zeros((1, 12))})
    with pytest.raises(
        DatasetFormatError, match=r"AllMOS_release.mat: variable 'AllMOS_release' not found; .*\['MOS'\]"
    ):
        load_livec(tmp_path)


def test_mat_length_mismatch_is_reported(tmp_path):
    make_live(tmp_path)
    with pytest.raises(DatasetFormatError, match=r"dmos_realigned.mat: dmos_new has 12 entries but .* hold 13"):
        load_live(tmp_path, folder_counts={**LIVE_COUNTS, "wn": 3})


def test_wrong_class_folder(tmp_path):
    make_emotionroi(tmp_path)
    (tmp_path / "images" / "joy").rename(tmp_path / "images" / "happy")
    with pytest.raises(DatasetFormatError, match=r"unexpected \['happy'\], missing \['joy'\]"):
        load_emotionroi(tmp_path)


def test_unknown_emotion_in_emoset_json(tmp_path):
    make_emoset(tmp_path)
    entries = json.loads((tmp_path / "val.json").read_text())
    entries[1][0] = "boredom"
    (tmp_path / "val.json").write_text(json.dumps(entries))
    with pytest.raises(DatasetFormatError, match=r"val.json: entry 1: emotion 'boredom' is not one of"):
        load_emoset(tmp_path)
    assert get_load_report(load_emoset(tmp_path, on_error="skip")).num_skipped == 1


def test_malformed_text_line_and_bad_distorted_name(tmp_path):
    make_tid2013(tmp_path)
    with open(tmp_path / "mos_with_names.txt", "a") as handle:
        handle.write("4.2 i01_09_1.bmp extra\n")
    with pytest.raises(DatasetFormatError, match=r"mos_with_names.txt: line 7: expected 2"):
        load_tid2013(tmp_path)
    make_kadid(tmp_path / "kadid")
    with open(tmp_path / "kadid" / "dmos.csv", "a") as handle:
        handle.write("weird.png,I01.png,3.0,0.1\n")
    with pytest.raises(DatasetFormatError, match=r"dmos.csv: line 8: image name 'weird.png'"):
        load_kadid10k(tmp_path / "kadid")


def test_empty_dataset_and_all_rows_skipped(tmp_path):
    make_koniq(tmp_path, n=1)
    write_csv(tmp_path / CSV, KONIQ_HEADER, [])
    with pytest.raises(DatasetFormatError, match="koniq10k: no usable rows"):
        load_koniq10k(tmp_path)
    write_csv(tmp_path / CSV, KONIQ_HEADER, [["gone.jpg", 1, 2, 3, 4, 5, 15, 3.0, 0.5, 50]])
    with pytest.raises(DatasetFormatError, match=r"no usable rows .*\(1 skipped\)"):
        load_koniq10k(tmp_path, on_error="skip")


def test_unsupported_table_and_unknown_class(tmp_path):
    (tmp_path / "t.xml").write_text("<x/>")
    with pytest.raises(DatasetFormatError, match="unsupported table format"):
        load_table(tmp_path / "t.xml")
    write_csv(tmp_path / "c.csv", ["path", "label"], [["a.png", "joy"]])
    with pytest.raises(DatasetFormatError, match=r"c.csv: line 2: label 'joy' is not one of the classes \['sad'\]"):
        load_table(tmp_path / "c.csv", task="classification", class_names=["sad"])


@pytest.mark.parametrize(
    "content, message",
    [
        ({"train": ["a.jpg", "a.jpg"]}, "'a.jpg' is listed twice"),
        ({"train": ["a.jpg"], "test": ["a.jpg"]}, "'a.jpg' is listed also in 'train'"),
        ({"train": ["a.jpg", "zzz.jpg"]}, r"train: 1 name\(s\) not in the dataset's 'image_name' column"),
        ({"train": [0, 7]}, r"row index/indices \[7\] out of range 0..2"),
        ({"train": [0], "holdout": [1]}, "unknown split name 'holdout'"),
        ({"train": [0, "b.jpg"]}, "all integers .* or all image names"),
        ([0, 1], "expected"),
    ],
)
def test_bad_split_files(tmp_path, content, message):
    ds = Dataset.from_dict({"image_name": ["a.jpg", "b.jpg", "c.jpg"], "sample_id": [0, 1, 2]})
    path = tmp_path / "split.json"
    path.write_text(json.dumps(content))
    with pytest.raises(DatasetFormatError, match=message):
        splits_from_file(ds, path)
    with pytest.raises(DatasetFormatError, match="split file not found"):
        splits_from_file(ds, tmp_path / "absent.json")


def test_invalid_on_error_value(tmp_path):
    make_koniq(tmp_path, n=1)
    with pytest.raises(ValueError, match="on_error must be"):
        load_koniq10k(tmp_path, on_error="ignore")
