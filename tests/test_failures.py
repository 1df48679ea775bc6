"""Misuse, faults and bad input, family by family, run as a user runs the commands (subprocesses): every expected
failure is one line naming the file/field/id with exit status 2 and no traceback; no file of the user's is touched;
nothing found is dropped silently.

Families: the user's files (score files, reports, repo folders); what gets scored (the folder walker, globs, image
folders: symlinked folders once, loops, images by content, hidden files, empty classes, every file found counted);
label files (not UTF-8, images listed twice); corrupt artefacts (weights, damaged score files); API inputs (numpy
arrays); `train.py` misuse (each one line `train.py: error: ...`, nothing trained); a training run killed at
random moments (one inside a checkpoint write) resumes to the results of an uninterrupted run; the error policy.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from perceptclip_hf import PerceptCLIPForClassification
from perceptclip_hf.data import (
    DatasetFormatError,
    LoadReport,
    get_load_report,
    load_emoset,
    load_imagefolder,
    load_koniq10k,
    load_lamem,
    load_table,
    load_things,
    load_tid2013,
    splits_from_file,
)
from perceptclip_hf.data.files import IMAGE_EXTENSIONS, sniff_image, walk_images
from perceptclip_hf.errors import UserError, run_command
from perceptclip_hf.scoring.scorer import PerceptScorer
from perceptclip_hf.training.recipe import parse_args
from perceptclip_hf.training.task import build_model, resolve_task
from perceptclip_hf.training.trainer import last_complete_checkpoint
from tests.helpers.cli import (
    assert_clean_failure,
    perceptclip,
    perceptclip_process,
    read_rows,
    sha256,
    tiny_recipe,
    train_command,
    train_py,
)
from tests.helpers.datasets import make_emoset, make_koniq, make_lamem, make_things, make_tid2013, write_image
from tests.helpers.models import random_image, save_trained_like
from tests.helpers.paths import REPO_ROOT


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(4):
        random_image(index).save(folder / f"im{index}.png")
    return folder


def predict(photos: Path, model: Path, output: Path, *extra, cwd: Path | None = None):
    return perceptclip(
        "predict", photos, "--model", model, "--output", output, "--tta", "2", *extra, cwd=cwd or photos.parent
    )


# ----------------------------------------------------------------------------- the user's files
@pytest.mark.parametrize(
    "content",
    [
        b"path,score\nim0.png,3.5\nim1.png,4.0",  # the user's label CSV, without a final newline (was cut)
        b"path,score,score_min,score_max,higher_is_better,error\nim0.png,1,1,5,True,\n",  # our columns, not our file
        b'{"path": "im0.png", "score": 1.0}\n{"path": "im1.png"',  # a JSONL file of someone else's
    ],
)
@pytest.mark.parametrize("option", ["--resume", "--overwrite"])
def test_resume_or_overwrite_of_a_foreign_file_leaves_it_byte_identical(content, option, photos, quality_dir, tmp_path):
    output = tmp_path / ("labels.jsonl" if content.startswith(b"{") else "labels.csv")
    output.write_bytes(content)
    before = sha256(output)
    result = predict(photos, quality_dir, output, option)
    assert_clean_failure(result, str(output), "not written by perceptclip predict", "left untouched")
    assert sha256(output) == before
    assert not Path(f"{output}.meta.json").exists() and sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["photos", output.name]
    )


def test_resume_with_another_model_or_settings_leaves_the_output_as_it_was(
    photos, quality_dir, tiny_clip_base, tmp_path
):
    output = tmp_path / "scores.csv"
    assert predict(photos, quality_dir, output).returncode == 0
    files = {path: sha256(path) for path in (output, Path(f"{output}.meta.json"))}
    other = save_trained_like(tiny_clip_base, tmp_path / "other", task="quality", score_range=[1.0, 5.0], seed=7)
    assert_clean_failure(predict(photos, other, output, "--resume"), "another model or settings", "model_fingerprint")
    assert_clean_failure(
        perceptclip("predict", photos, "--model", quality_dir, "-o", output, "--tta", "3", "--resume", cwd=tmp_path),
        "settings",
        "'crops': 2",
        "'crops': 3",
    )
    assert {path: sha256(path) for path in files} == files


def test_every_output_records_its_model_and_settings(photos, quality_dir, tmp_path):
    output = tmp_path / "scores.jsonl"
    assert predict(photos, quality_dir, output, "--seed", "5").returncode == 0
    record = json.loads(Path(f"{output}.meta.json").read_text())
    scorer = PerceptScorer.from_pretrained(quality_dir)
    assert record["writer"] == "perceptclip predict" and record["task"] == "quality"
    assert record["model_fingerprint"] == scorer.fingerprint() and record["settings"] == {"crops": 2, "seed": 5}
    assert record["runs"][0]["model"] == str(quality_dir) and record["runs"][0]["scored"] == 4
    # the fingerprint is the model's content: a copy elsewhere resumes the same file
    copy = shutil.copytree(quality_dir, tmp_path / "copy")
    resumed = predict(photos, copy, output, "--resume", "--seed", "5")
    assert resumed.returncode == 0, resumed.stderr
    assert "0 scored, 0 failed, 4 skipped" in resumed.stderr


def test_resume_from_another_folder_skips_what_is_done(photos, quality_dir, tmp_path):
    output = tmp_path / "scores.csv"
    first = perceptclip("predict", "photos", "--model", quality_dir, "-o", "scores.csv", "--tta", "2", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert all(Path(row["id"]).is_absolute() for row in read_rows(output))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    resumed = perceptclip(
        "predict", "../photos", "--model", quality_dir, "-o", "../scores.csv", "--tta", "2", "--resume", cwd=elsewhere
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "0 scored, 0 failed, 4 skipped" in resumed.stderr
    assert len(read_rows(output)) == 4


@pytest.mark.parametrize(
    "output_name, fragment",
    [
        ("missing/scores.csv", "does not exist"),  # a folder that is not there
        ("notes.txt/scores.csv", "is a file, not a folder"),
        ("/proc/scores.csv", "cannot write"),  # read-only even for root
    ],
)
def test_output_location_fails_before_the_model_is_loaded(output_name, fragment, photos, quality_dir, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    broken = shutil.copytree(quality_dir, tmp_path / "broken")
    (broken / "model.safetensors").write_bytes(b"garbage")  # loading it would be the error otherwise
    assert_clean_failure(predict(photos, broken, Path(output_name)), fragment)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_evaluate_explain_and_push_leave_the_users_files_alone(photos, quality_dir, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "metrics.json").write_text('{"my": "numbers"}')
    (mine / "head_importance.json").write_text("my notes")
    (mine / "README.md").write_text("my readme")
    before = {path: sha256(path) for path in mine.iterdir()}
    assert_clean_failure(
        perceptclip(
            "evaluate",
            "--model",
            quality_dir,
            "--dataset",
            "koniq10k",
            "--data-dir",
            photos,
            "--output",
            mine / "metrics.json",
            cwd=tmp_path,
        ),
        str(mine / "metrics.json"),
        "not written by perceptclip evaluate",
    )
    assert_clean_failure(
        perceptclip("explain", photos, "--model", quality_dir, "--out", mine, cwd=tmp_path),
        "--out",
        "not written by perceptclip explain",
    )
    assert_clean_failure(
        perceptclip("push", "--model-dir", quality_dir, "--repo-id", "me/x", "--dry-run", mine, cwd=tmp_path),
        str(mine),
        "not empty",
    )
    assert {path: sha256(path) for path in mine.iterdir()} == before


def test_explain_continues_its_own_folder(photos, quality_dir, tmp_path):
    out = tmp_path / "explained"
    for _ in range(2):
        result = perceptclip(
            "explain", photos / "im0.png", "--model", quality_dir, "--out", out, "--top-k", "1", cwd=tmp_path
        )
        assert result.returncode == 0, result.stderr
    assert json.loads((out / "head_importance.json").read_text())["writer"] == "perceptclip explain"


# ----------------------------------------------------------------------------- what gets scored
def test_folders_links_unknown_extensions_and_duplicates_are_scored_once_or_counted(photos, quality_dir, tmp_path):
    library = tmp_path / "library"
    (library / "2024").mkdir(parents=True)
    random_image(10).save(library / "2024" / "scan.jfif", format="JPEG")
    random_image(11).save(library / "2024" / "download", format="PNG")  # no extension
    (library / "2024" / "notes.txt").write_text("not an image")
    (library / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    os.symlink(photos, library / "linked")  # a symlinked folder: walked once
    os.symlink(library, library / "2024" / "loop")  # a loop back to the top
    os.symlink(photos / "im0.png", library / "alias.png")  # the same file under another name
    output = tmp_path / "scores.csv"
    result = perceptclip(
        "predict", library, f"{library}/**", "--model", quality_dir, "-o", output, "--tta", "1", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    rows = read_rows(output)
    real = [os.path.realpath(row["id"]) for row in rows]
    assert len(real) == len(set(real)) == 6 and not any(row["error"] for row in rows)
    assert {Path(r).name for r in real} == {"scan.jfif", "download", "im0.png", "im1.png", "im2.png", "im3.png"}
    record = json.loads(Path(f"{output}.meta.json").read_text())["runs"][0]
    reasons = "\n".join(record["not_scored"])
    assert "notes.txt: not an image" in reasons and ".DS_Store: hidden file" in reasons
    assert "2024/loop: symlink loop" in reasons
    assert "linked/im0.png: same file as " + str(library / "alias.png") in reasons
    assert f"; {len(record['not_scored'])} not scored (" in result.stderr
    assert all(f"not scored: {line}" in result.stderr for line in record["not_scored"][:20])


def test_a_folder_of_non_images_is_one_line_with_the_count(quality_dir, tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("a")
    (tmp_path / "docs" / "b.pdf").write_bytes(b"%PDF-1.4")
    assert_clean_failure(
        perceptclip("predict", "docs", "--model", quality_dir, cwd=tmp_path),
        "no images found",
        "2 files that are not images",
    )


PLUGIN = """
from pathlib import Path
from perceptclip_hf.data import DatasetInfo, load_imagefolder, load_table, register_dataset

register_dataset(DatasetInfo("mine", "quality", lambda d, **kw: load_table(Path(d) / "scores.csv", **kw),
                             "test_only", (1.0, 5.0), num_splits=1))
register_dataset(DatasetInfo("mine_folder", "emotion", load_imagefolder, "test_only", num_splits=1))
"""


def evaluate_with_plugin(tmp_path: Path, model: Path, dataset: str, data_dir: Path) -> subprocess.CompletedProcess:
    """``perceptclip --plugin myplugin evaluate ...`` in ``tmp_path``, as a user runs it (a process of its own: the
    plugin registers its datasets for that process only)."""
    (tmp_path / "myplugin.py").write_text(PLUGIN)
    return perceptclip_process(
        "--plugin", "myplugin", "evaluate", "--model", model, "--dataset", dataset, "--data-dir", data_dir, cwd=tmp_path
    )


def assert_one_error_line(result: subprocess.CompletedProcess, *parts: str) -> str:
    line = assert_clean_failure(result, *parts)
    assert line.startswith("perceptclip evaluate: error: ")
    return line


def save_as(path: Path, image_format: str, seed: int = 0) -> Path:
    """An image in ``image_format`` whatever the name says (the name may have another or no extension)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), (seed * 40 % 256, 90, 160)).save(path, format=image_format)
    return path


# ----------------------------------------------------------------------------- what gets scored: the walker
def test_image_extensions_include_jfif_and_are_defined_once():
    assert {".jfif", ".jpe"} <= set(IMAGE_EXTENSIONS)
    sources = Path(__file__).resolve().parents[1].joinpath("perceptclip_hf").rglob("*.py")
    assert [p.name for p in sources if "IMAGE_EXTENSIONS = " in p.read_text()] == ["files.py"]


def test_walk_images_accounts_for_every_file_once(tmp_path):
    root, outside = tmp_path / "photos", tmp_path / "elsewhere"
    images = [
        write_image(root / "a.jpg"),
        save_as(root / "b.jfif", "JPEG"),
        save_as(root / "c.jpe", "JPEG"),
        save_as(root / "camera_download", "JPEG"),
        save_as(root / "export.dat", "PNG"),
        write_image(root / "sub" / "deep" / "d.png"),
        write_image(root / "sub" / "e.webp"),
    ]
    (root / "fake.jpg").write_text("a text file named .jpg")  # known extension: listed, fails when decoded
    images.append(root / "fake.jpg")
    linked = [write_image(outside / "f.png"), write_image(outside / "g.bmp")]
    (root / "linked").symlink_to(outside, target_is_directory=True)
    images += [root / "linked" / p.name for p in linked]
    (root / "notes.txt").write_text("not an image")
    write_image(root / "._a.jpg")  # macOS AppleDouble file: hidden
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    write_image(root / ".thumbnails" / "t.png")
    (root / "linked_again").symlink_to(outside, target_is_directory=True)
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)
    (root / "gone.jpg").symlink_to(tmp_path / "deleted.jpg")
    expected_not_scored = {
        root / "notes.txt": "not an image",
        root / "._a.jpg": "hidden file",
        root / ".DS_Store": "hidden file",
        root / ".thumbnails": "hidden folder (not searched)",
        root / "linked_again": "symlink loop / already visited folder",
        root / "sub" / "loop": "symlink loop / already visited folder",
        root / "gone.jpg": "broken symlink",
    }

    result = walk_images(root)

    assert result.images == sorted(map(str, images), key=lambda p: Path(p).parts)
    assert dict(result.not_scored) == {str(p): reason for p, reason in expected_not_scored.items()}
    assert len(result.images) + len(result.not_scored) == len(images) + len(expected_not_scored)  # each once


@pytest.mark.parametrize(
    "image_format", ["JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP", "JPEG2000", "AVIF", "QOI", "PPM"]
)
def test_sniff_recognises_what_pillow_writes(tmp_path, image_format):
    try:
        path = save_as(tmp_path / "no_extension", image_format)
    except (KeyError, OSError) as err:  # a Pillow build without this codec
        pytest.skip(f"Pillow cannot write {image_format}: {err}")
    assert sniff_image(path) and walk_images(tmp_path).images == [str(path)]


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"hello",
        b"%PDF-1.4\n",
        b"path,score\na.jpg,3\n",
        b"P1 is a label\n",
        b"BMW 320i,4.5\n",
        b"RIFF\0\0\0\0WAVEfmt ",
    ],
)
def test_sniff_rejects_other_content(tmp_path, content):
    (tmp_path / "file").write_bytes(content)
    assert not sniff_image(tmp_path / "file")
    assert walk_images(tmp_path).not_scored == [(str(tmp_path / "file"), "not an image")]


# ----------------------------------------------------------------------------- what gets scored: image folders
def make_class_folders(root: Path, outside: Path) -> tuple[dict[str, str], dict[Path, str]]:
    """amusement/ (sub-folders, .jfif, no extension, a loop), awe -> a symlinked folder, anger/ (no image).

    Returns the images each class should load (name -> class) and the entries that should be reported."""
    loaded = {}
    for path in (
        write_image(root / "amusement" / "1.jpg"),
        write_image(root / "amusement" / "sub" / "2.png"),
        save_as(root / "amusement" / "sub" / "deeper" / "3.jfif", "JPEG"),
        save_as(root / "amusement" / "4", "JPEG"),
    ):
        loaded[path.relative_to(root).as_posix()] = "amusement"
    for path in (write_image(outside / "5.png"), save_as(outside / "6.jpe", "JPEG")):
        loaded[f"awe/{path.name}"] = "awe"
    (root / "awe").symlink_to(outside, target_is_directory=True)
    (root / "amusement" / "sub" / "loop").symlink_to(root, target_is_directory=True)
    (root / "amusement" / "notes.txt").write_text("shot in 2021")
    (root / "amusement" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    write_image(root / "stray.png")
    (root / "anger").mkdir()
    reported = {
        root / "amusement" / "notes.txt": "not an image",
        root / "amusement" / ".DS_Store": "hidden file",
        root / "amusement" / "sub" / "loop": "symlink loop / already visited folder",
        root / "stray.png": "not in a class folder",
        root / "anger": "class folder with no images",
    }
    return loaded, reported


def test_imagefolder_loads_sub_folders_symlinks_and_sniffed_files_and_reports_the_rest(tmp_path, caplog):
    root = tmp_path / "data"
    loaded, reported = make_class_folders(root, tmp_path / "awe_photos")
    with caplog.at_level(logging.WARNING, logger="perceptclip_hf.data"):
        ds = load_imagefolder(root)
    assert ds.features["label"].names == ["amusement", "anger", "awe"]
    names = ds.features["label"].names
    assert {name: names[label] for name, label in zip(ds["image_name"], ds["label"])} == loaded
    report = LoadReport.from_description(get_load_report(ds).to_description())
    assert sorted(report.not_loaded) == sorted(f"{path}: {reason}" for path, reason in reported.items())
    assert f"class folder {root / 'anger'} has no images" in caplog.text
    assert report.num_source_rows == len(loaded) and report.skipped == [] and report.duplicates == []


def test_a_text_file_named_jpg_is_counted_as_unreadable(tmp_path):
    write_image(tmp_path / "awe" / "ok.png")
    (tmp_path / "awe" / "notes.jpg").write_text("not a picture")
    assert len(load_imagefolder(tmp_path)) == 2  # listed by its name; decoding fails when it is scored
    with pytest.raises(DatasetFormatError, match=r"notes.jpg: cannot decode image"):
        load_imagefolder(tmp_path, verify_images=True)
    ds = load_imagefolder(tmp_path, verify_images=True, on_error="skip")
    assert len(ds) == 1 and len(get_load_report(ds).skipped) == 1 and "notes.jpg" in get_load_report(ds).skipped[0]


def test_load_reports_written_before_the_new_fields_still_read():
    old = 'perceptclip_hf load report: {"dataset": "koniq10k", "num_source_rows": 6, "skipped": ["x"]}'
    assert LoadReport.from_description(old) == LoadReport("koniq10k", 6, ["x"], [], [])


def test_things_looks_images_up_with_the_same_walker(tmp_path):
    scores = make_things(tmp_path)
    write_image(tmp_path / ".thumbnails" / "zebra_01b.jpg")  # in a hidden folder: not an ambiguous second match
    assert sorted(load_things(tmp_path)["image_name"]) == sorted(scores)


def test_cli_evaluates_an_image_folder_with_symlinks_sub_folders_and_an_empty_class(tmp_path, emotion_dir):
    loaded, _ = make_class_folders(tmp_path / "data", tmp_path / "awe_photos")
    result = evaluate_with_plugin(tmp_path, emotion_dir, "mine_folder", tmp_path / "data")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert json.loads(result.stdout)["num_images"] == len(loaded)
    assert f"class folder {tmp_path / 'data' / 'anger'} has no images" in result.stderr


def test_cli_image_folder_with_nothing_to_load_is_one_error_line(tmp_path, emotion_dir):
    (tmp_path / "data" / "awe").mkdir(parents=True)
    (tmp_path / "data" / "awe" / "readme.txt").write_text("photos to come")
    result = evaluate_with_plugin(tmp_path, emotion_dir, "mine_folder", tmp_path / "data")
    assert_one_error_line(result, "no usable rows", "readme.txt: not an image")


# ----------------------------------------------------------------------------- label files: encodings
TABLE = "path,score\na.jpg,3.0\n{name},4.0\n"


@pytest.mark.parametrize(
    "encoding, name, line, byte, iconv",
    [
        ("latin1", "café.jpg", 3, "0xe9", "latin1"),
        ("utf-16", "café.jpg", 1, "0xff", "utf-16"),  # Excel's "Unicode text"
    ],
)
def test_cli_label_file_not_in_utf8_is_one_error_line(tmp_path, quality_dir, encoding, name, line, byte, iconv):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "scores.csv").write_bytes(TABLE.format(name=name).encode(encoding))
    result = evaluate_with_plugin(tmp_path, quality_dir, "mine", tmp_path / "data")
    assert_one_error_line(
        result,
        f"scores.csv: line {line}: byte {byte} is not UTF-8",
        f"iconv -f {iconv} -t utf-8 {tmp_path / 'data' / 'scores.csv'} > ",
    )


def _reencode(path: Path, encoding: str, old: str = "", new: str = "") -> None:
    path.write_bytes(path.read_text(encoding="utf-8").replace(old, new, 1).encode(encoding))


def _set_up_reader(kind: str, root: Path) -> tuple[Callable[[], object], Path]:
    """A label file of one reader re-saved in Latin-1 with a non-ASCII name; the call that reads it."""
    if kind == "csv":
        (root / "scores.csv").write_bytes(TABLE.format(name="café.jpg").encode("latin1"))
        return lambda: load_table(root / "scores.csv"), root / "scores.csv"
    if kind == "tsv (Windows-1252)":
        (root / "scores.tsv").write_bytes(TABLE.replace(",", "\t").format(name="“best”.jpg").encode("cp1252"))
        return lambda: load_table(root / "scores.tsv"), root / "scores.tsv"
    if kind == "jsonl":
        (root / "rows.jsonl").write_bytes(
            '{"path": "a.jpg", "score": 3}\n{"path": "café.jpg", "score": 4}\n'.encode("latin1")
        )
        return lambda: load_table(root / "rows.jsonl"), root / "rows.jsonl"
    if kind == "json":
        (root / "t.json").write_bytes('{"path": ["a.jpg",\n "café.jpg"], "score": [1, 2]}'.encode("latin1"))
        return lambda: load_table(root / "t.json"), root / "t.json"
    if kind == "koniq csv":
        make_koniq(root)
        _reencode(root / "koniq10k_scores_and_distributions.csv", "latin1", "1001.jpg", "1001é.jpg")
        return lambda: load_koniq10k(root), root / "koniq10k_scores_and_distributions.csv"
    if kind == "tid2013 text lines":
        make_tid2013(root)
        _reencode(root / "mos_with_names.txt", "latin1", "i01_02_2.bmp", "i01_02_2é.bmp")
        return lambda: load_tid2013(root), root / "mos_with_names.txt"
    if kind == "lamem split file":
        make_lamem(root)
        split = root / "lamem" / "splits" / "train_1.txt"
        _reencode(split, "latin1", "\n", "\n# é\n")
        return lambda: load_lamem(root), split
    if kind == "things csv header":
        make_things(root)
        _reencode(root / "things_memorability.csv", "latin1", "image_name", "image_nameé")
        return lambda: load_things(root, image_column="image_nameé"), root / "things_memorability.csv"
    if kind == "emoset json":
        make_emoset(root)
        _reencode(root / "val.json", "latin1", "amusement_", "amusementé_")
        return lambda: load_emoset(root), root / "val.json"
    if kind == "split file":
        make_koniq(root)
        (root / "split.json").write_bytes('{"train": ["1000.jpg"],\n "test": ["1001.jpg", "é"]}'.encode("latin1"))
        return lambda: splits_from_file(load_koniq10k(root), root / "split.json"), root / "split.json"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "csv",
        "tsv (Windows-1252)",
        "jsonl",
        "json",
        "koniq csv",
        "tid2013 text lines",
        "lamem split file",
        "things csv header",
        "emoset json",
        "split file",
    ],
)
def test_every_label_file_reader_names_file_line_and_byte(tmp_path, kind):
    read, path = _set_up_reader(kind, tmp_path)
    data = path.read_bytes()
    first_bad = next(i for i, b in enumerate(data) if b >= 0x80)
    line, iconv = data[:first_bad].count(b"\n") + 1, "cp1252" if "1252" in kind else "latin1"
    with pytest.raises(DatasetFormatError) as caught:
        read()
    assert str(caught.value).startswith(f"{path}: line {line}: byte 0x{data[first_bad]:02x} is not UTF-8")
    assert f"iconv -f {iconv} -t utf-8 {path} > " in str(caught.value)


def test_utf8_with_bom_and_crlf_loads_but_utf16_without_bom_is_named(tmp_path):
    write_image(tmp_path / "a.jpg")
    write_image(tmp_path / "café.jpg")
    text = TABLE.format(name="café.jpg").replace("\n", "\r\n")
    (tmp_path / "scores.csv").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))  # Excel's "CSV UTF-8"
    assert load_table(tmp_path / "scores.csv")["image_name"] == ["a.jpg", "café.jpg"]
    (tmp_path / "scores.csv").write_bytes(TABLE.format(name="b.jpg").encode("utf-16-le"))  # no BOM: NUL bytes
    with pytest.raises(DatasetFormatError, match=r"scores.csv: line 1: NUL byte .*UTF-16.*iconv -f utf-16"):
        load_table(tmp_path / "scores.csv")


# ----------------------------------------------------------------------------- label files: images listed twice
def test_cli_conflicting_duplicate_rows_are_one_error_line_naming_both_lines(tmp_path, quality_dir):
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        write_image(tmp_path / "data" / name)
    (tmp_path / "data" / "scores.csv").write_text("path,score\na.jpg,3.0\nb.jpg,2.0\nc.jpg,1.0\na.jpg,4.5\n")
    result = evaluate_with_plugin(tmp_path, quality_dir, "mine", tmp_path / "data")
    assert_one_error_line(
        result,
        "a.jpg is listed 2 times",
        "scores.csv: line 2 (label 3.0)",
        "scores.csv: line 5 (label 4.5)",
        "duplicates='first'",
        "duplicates='mean'",
    )


@pytest.mark.parametrize(
    "first, second", [("a.jpg", "./a.jpg"), ("img/a.jpg", "img/../img/a.jpg"), ("img/a.jpg", "link/a.jpg")]
)
def test_one_image_spelt_two_ways_is_a_duplicate(tmp_path, first, second):
    write_image(tmp_path / "a.jpg")
    write_image(tmp_path / "img" / "a.jpg")
    (tmp_path / "link").symlink_to(tmp_path / "img", target_is_directory=True)
    (tmp_path / "scores.csv").write_text(f"path,score\n{first},3\n{second},3\n")
    with pytest.raises(DatasetFormatError, match=r"a.jpg is listed 2 times: .*scores.csv: line 2 .*scores.csv: line 3"):
        load_table(tmp_path / "scores.csv")


def test_identical_images_linked_to_one_stored_file_are_not_duplicates(tmp_path):
    blob = save_as(tmp_path / "blobs" / "sha256-0001", "JPEG")  # content-addressed stores (git-annex, the Hub cache)
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / name).symlink_to(blob)
    (tmp_path / "scores.csv").write_text("path,score\na.jpg,3\nb.jpg,4\n")
    assert load_table(tmp_path / "scores.csv")["label"] == [3.0, 4.0]


def test_duplicates_first_or_mean_keep_one_row_and_record_it(tmp_path, caplog):
    for name in ("a.jpg", "b.jpg"):
        write_image(tmp_path / name)
    (tmp_path / "scores.csv").write_text("path,score\na.jpg,3.0\nb.jpg,2.0\na.jpg,4.0\n")
    with caplog.at_level(logging.WARNING, logger="perceptclip_hf.data"):
        first = load_table(tmp_path / "scores.csv", duplicates="first")
    assert first["label"] == [3.0, 2.0] and first["sample_id"] == [0, 1]  # the repeat's row id is left out
    report = get_load_report(first)
    assert len(report.duplicates) == 1 and report.num_source_rows == 3 and "listed more than once" in caplog.text
    entry = report.duplicates[0]
    assert "scores.csv: line 2 (label 3.0), " in entry and "scores.csv: line 4 (label 4.0); kept the first" in entry
    mean = load_table(tmp_path / "scores.csv", duplicates="mean")
    assert mean["label"] == [3.5, 2.0] and get_load_report(mean).duplicates[0].endswith("averaged to 3.5")
    with pytest.raises(ValueError, match="duplicates must be one of"):
        load_table(tmp_path / "scores.csv", duplicates="last")


def test_duplicate_classes_mean_needs_agreement_first_keeps_the_first(tmp_path):
    for name in ("a.jpg", "b.jpg"):
        write_image(tmp_path / name)
    (tmp_path / "c.csv").write_text("path,label\na.jpg,awe\nb.jpg,fear\na.jpg,awe\n")
    agree = load_table(tmp_path / "c.csv", task="classification", duplicates="mean")
    assert agree["label"] == [0, 1] and len(get_load_report(agree).duplicates) == 1
    (tmp_path / "c.csv").write_text("path,label\na.jpg,awe\nb.jpg,fear\na.jpg,fear\n")
    with pytest.raises(DatasetFormatError, match=r"line 2 \(label awe\), .*line 4 \(label fear\).*duplicates='first'"):
        load_table(tmp_path / "c.csv", task="classification", duplicates="mean")
    assert load_table(tmp_path / "c.csv", task="classification", duplicates="first")["label"] == [0, 1]


def test_official_loaders_reject_an_image_listed_twice_lamem_merges_its_split_files(tmp_path):
    make_emoset(tmp_path / "emoset")
    train = json.loads((tmp_path / "emoset" / "train.json").read_text())
    test = json.loads((tmp_path / "emoset" / "test.json").read_text())
    (tmp_path / "emoset" / "test.json").write_text(json.dumps(test + [train[0]]))  # straddles train and test
    with pytest.raises(DatasetFormatError, match=rf"train.json: entry 0 .*test.json: entry {len(test)} "):
        load_emoset(tmp_path / "emoset")
    scores = make_lamem(tmp_path)  # every image is in 5 of the 15 split files, by design: one row each
    lamem = load_lamem(tmp_path)
    assert len(lamem) == len(scores) and get_load_report(lamem).duplicates == []


# ----------------------------------------------------------------------------- corrupt artefacts
@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_corrupt_weights_file_is_named(damage, photos, quality_dir, tmp_path):
    model = shutil.copytree(quality_dir, tmp_path / "model")
    weights = model / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"truncated": data[: len(data) // 2], "garbage": os.urandom(500), "empty": b""}[damage])
    assert_clean_failure(
        perceptclip("predict", photos, "--model", model, cwd=tmp_path), str(weights), "corrupt or truncated", "again"
    )


def test_a_corrupt_base_backbone_is_named(photos, quality_dir, tiny_clip_base, tmp_path):
    base = shutil.copytree(tiny_clip_base, tmp_path / "base")
    (base / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    result = perceptclip("predict", photos, "--model", quality_dir, "--base-model", base, cwd=tmp_path)
    assert_clean_failure(result, str(base / "model.safetensors"), "corrupt")


def test_an_unreachable_hub_id_names_the_id_and_the_local_copy_fix(photos, tmp_path):
    result = perceptclip_process(  # HF_HUB_OFFLINE is read when huggingface_hub is imported: a fresh process
        "predict", photos, "--model", "someone/perceptclip-missing", cwd=tmp_path, env={"HF_HUB_OFFLINE": "1"}
    )
    assert_clean_failure(result, "someone/perceptclip-missing", "hf download someone/perceptclip-missing")


def test_push_without_the_hub_names_the_repo_and_the_offline_route(quality_dir, tmp_path):
    offline = {"HF_HUB_OFFLINE": "1"}  # read when huggingface_hub is imported: fresh processes
    upload = perceptclip_process(
        "push", "--model-dir", quality_dir, "--repo-id", "me/perceptclip-x", cwd=tmp_path, env=offline
    )
    assert_clean_failure(upload, "--repo-id me/perceptclip-x", "--dry-run DIR")
    official = perceptclip_process(
        "push",
        "--from-official",
        "PerceptCLIP/PerceptCLIP_IQA",
        "--repo-id",
        "me/x",
        "--dry-run",
        tmp_path / "repo",
        cwd=tmp_path,
        env=offline,
    )
    assert_clean_failure(official, "PerceptCLIP/PerceptCLIP_IQA", "hf download PerceptCLIP/PerceptCLIP_IQA")


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_damaged_line_in_our_output_stops_resume_and_touches_nothing(suffix, photos, quality_dir, tmp_path):
    output = tmp_path / f"scores{suffix}"
    assert predict(photos, quality_dir, output).returncode == 0
    lines = output.read_bytes().splitlines(keepends=True)
    lines[2] = b'{"path": "/x.png", "sco\n' if suffix == ".jsonl" else b"/x/caf\xe9.png,1,1,5,True,\n"
    output.write_bytes(b"".join(lines))
    before = sha256(output)
    assert_clean_failure(predict(photos, quality_dir, output, "--resume"), str(output), "line 3", "untouched")
    assert sha256(output) == before


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_an_interrupted_last_line_of_ours_is_cut_and_rescored(suffix, photos, quality_dir, tmp_path):
    output = tmp_path / f"scores{suffix}"
    assert predict(photos, quality_dir, output).returncode == 0
    complete = read_rows(output)
    text = output.read_text()
    output.write_text(text[: text.rstrip("\n").rfind("\n") + 12])  # half of the last row
    resumed = predict(photos, quality_dir, output, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "1 scored, 0 failed, 3 skipped" in resumed.stderr
    rows = read_rows(output)
    assert [row["id"] for row in rows] == [row["id"] for row in complete]
    assert [float(row["score"]) for row in rows] == pytest.approx([float(row["score"]) for row in complete], abs=1e-5)
    output.write_text("")  # killed before the header was written
    again = predict(photos, quality_dir, output, "--resume")
    assert "4 scored, 0 failed, 0 skipped" in again.stderr, again.stderr
    assert [row["id"] for row in read_rows(output)] == [row["id"] for row in complete]


def test_failed_images_are_kept_until_retry_errors(photos, quality_dir, tmp_path):
    (photos / "late.png").write_bytes(b"still downloading")
    output = tmp_path / "scores.csv"
    assert predict(photos, quality_dir, output).returncode == 0
    random_image(99).save(photos / "late.png")  # the download finished
    again = predict(photos, quality_dir, output, "--resume")
    assert "0 scored, 0 failed, 5 skipped" in again.stderr and "1 of them failed before: --retry-errors" in again.stderr
    retried = predict(photos, quality_dir, output, "--resume", "--retry-errors")
    assert retried.returncode == 0, retried.stderr
    assert "1 scored, 0 failed, 4 skipped" in retried.stderr
    rows = read_rows(output)
    assert len(rows) == 5 and not any(row["error"] for row in rows)
    assert len({row["id"] for row in rows}) == 5


# --------------------------------------------------------------------------- train.py misuse, and resuming after kills
HUB_ID = "openai/clip-vit-base-patch32"
BAD_YAML = "dataset: [synthetic_iqa]\nsplits: [0]\nlearning_rate: 0.001\n  num_train_epochs: 2\n"

# id: the recipe (overrides of the tiny recipe, or `yaml` text), the command line after `--config <recipe>`
# ({dir}: the case's folder), the words the error line must contain, and environment variables.
MISUSES = {
    "recipe_missing": dict(config="{dir}/no_such_recipe.yaml", names=["no_such_recipe.yaml", "cannot read"]),
    "yaml_syntax_error": dict(yaml=BAD_YAML, names=["recipe.yaml", "not valid YAML", "line 4"]),
    "yaml_not_a_mapping": dict(yaml="- dataset\n- koniq10k\n", names=["recipe.yaml", "expected a mapping"]),
    "yaml_key_typo": dict(recipe={"learning_rat": 0.1}, names=["recipe.yaml", "learning_rat", "learning_rate"]),
    "yaml_value_type": dict(
        recipe={"per_device_train_batch_size": 2.5},
        names=["recipe.yaml", "per_device_train_batch_size", "invalid int value: '2.5'"],
    ),
    "yaml_list_for_one_value": dict(
        recipe={"learning_rate": [0.1, 0.01]}, names=["recipe.yaml", "learning_rate", "expected one value"]
    ),
    "command_line_typo": dict(args=["--learnin_rate", "0.1"], names=["unrecognized arguments: --learnin_rate"]),
    "invalid_model_option": dict(args=["--adaptation", "lorax"], names=["--adaptation", "'lorax'", "'lora'"]),
    "splits_out_of_range": dict(args=["--splits", "-1", "10"], names=["--splits [-1, 10]", "0..9"]),
    "data_dir_count": dict(args=["--data_dir", "a", "b"], names=["--data_dir", "one folder per --dataset"]),
    "data_folder_missing": dict(
        args=["--dataset", "koniq10k", "--data_dir", "{dir}/no_data"], names=["no_data", "not found"]
    ),
    "dataset_unknown": dict(args=["--dataset", "koniq"], names=["unknown dataset 'koniq'", "koniq10k"]),
    # The recipe's vision_config is dropped for the command line's backbone (else LoRA finds no module to adapt):
    # the Hub id is what fails. HF_HUB_OFFLINE=1 fails at once, as a machine without a network does after
    # huggingface_hub's retries (~25 s here), with the same message.
    "hub_unreachable": dict(
        args=["--base_model_name_or_path", HUB_ID, "--adaptation", "lora"],
        env={"HF_HUB_OFFLINE": "1"},
        info="vision_config (dropped)",
        names=[
            f"--base_model_name_or_path {HUB_ID}",
            "cannot reach the Hugging Face Hub",
            f"hf download {HUB_ID}",
            "--base_model_name_or_path DIR",
        ],
    ),
    "two_backbones": dict(
        args=["--base_model_name_or_path", HUB_ID, "--vision_config", '{"model_type": "resnet"}'],
        names=["--base_model_name_or_path and --vision_config", "give only one"],
    ),
    "learning_rate_negative": dict(args=["--learning_rate", "-0.001"], names=["--learning_rate -0.001", "> 0"]),
    "learning_rate_zero": dict(args=["--learning_rate", "0"], names=["--learning_rate 0", "> 0"]),
    "learning_rate_sweep_with_zero": dict(
        args=["--learning_rates", "0.001", "0"], names=["--learning_rates 0.001 0", "> 0"]
    ),
    "plcc_batch_of_one": dict(
        args=["--per_device_train_batch_size", "1"],
        names=["--loss plcc", "--per_device_train_batch_size 1", "batch ≥ 2"],
    ),
    "plcc_fewer_samples_than_a_batch": dict(
        args=["--max_train_samples", "8"], names=["--max_train_samples 8", "--per_device_train_batch_size 32"]
    ),
    "no_training_steps": dict(args=["--num_train_epochs", "0"], names=["--num_train_epochs 0", "trains nothing"]),
    "validation_fraction": dict(args=["--validation_fraction", "0"], names=["--validation_fraction 0", "between"]),
    "output_dir_is_a_file": dict(args=["--output_dir", "{dir}/a_file/run"], names=["a_file is a file"]),
}


def run_misuse(case: str, folder: Path) -> subprocess.CompletedProcess:
    spec = MISUSES[case]
    folder.mkdir(parents=True)
    (folder / "a_file").write_text("not a folder")
    recipe = folder / "recipe.yaml"
    if "yaml" in spec:
        recipe.write_text(spec["yaml"])
    else:  # the quickstart recipe; its data folder does not exist: a refusal must come before loading (generating)
        tiny_recipe(folder, folder / "no_data", **spec.get("recipe", {}))
    config = spec.get("config", str(recipe)).replace("{dir}", str(folder))
    arguments = [argument.replace("{dir}", str(folder)) for argument in spec.get("args", [])]
    if "env" not in spec:  # the same `main` as train.py's, in this process
        return train_py("--config", config, *arguments, cwd=REPO_ROOT)
    return subprocess.run(  # an environment read when huggingface_hub is imported: a fresh process
        train_command(Path(config), *arguments),
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
        env={**os.environ, **spec["env"]},
    )


@pytest.fixture(scope="module")
def misuse_runs(request, tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """The selected cases' `train.py` runs (in this process but those that need a fresh one)."""
    selected = [
        item.callspec.params["case"]
        for item in request.session.items
        if getattr(item, "originalname", None) == "test_misuse_is_one_line_naming_the_cause"
    ]
    root = tmp_path_factory.mktemp("misuses")
    return {case: (run_misuse(case, root / case), root / case) for case in selected}


@pytest.mark.parametrize("case", list(MISUSES))
def test_misuse_is_one_line_naming_the_cause(case, misuse_runs):
    result, folder = misuse_runs[case]
    spec = MISUSES[case]
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("train.py: error: "), result.stderr[-3000:]
    missing = [words for words in spec["names"] if words not in message]
    assert not missing, (missing, message)
    assert spec.get("info", "") in result.stderr
    # Nothing trained, nothing loaded: no output folder, and the synthetic data folder was not generated.
    assert not (folder / "run").exists() and not (folder / "no_data").exists()
    assert (folder / "a_file").is_file()


def test_command_line_backbone_replaces_the_recipes_vision_config(tmp_path, tiny_clip_base, caplog):
    """The quickstart recipe sets a random backbone (`vision_config`); `--base_model_name_or_path` on the command
    line wins, so `--adaptation lora` adapts the pretrained backbone; the recipe's other values stay."""
    config = tiny_recipe(tmp_path, tmp_path / "data")
    with caplog.at_level("INFO", logger="perceptclip_hf.training.recipe"):
        model_args, data_args, _, training_args = parse_args(
            ["--config", str(config), "--base_model_name_or_path", str(tiny_clip_base), "--adaptation", "lora"]
        )
    assert model_args.vision_config is None and model_args.base_model_name_or_path == str(tiny_clip_base)
    assert f"replaces {config}'s vision_config (dropped)" in caplog.text
    assert model_args.head_hidden_sizes == [64, 32] and training_args.num_train_epochs == 2
    model = build_model(model_args, resolve_task(data_args.dataset))
    assert any("lora_A" in name for name, _ in model.named_parameters())


# train.py as the killed runs run it: Trainer.train starts the clock; KILL_AFTER=<s> kills the process that long
# after, KILL_AT_SAVE=<n> inside the n-th checkpoint write (after its weights, optimizer and scheduler, before its
# RNG state and trainer_state.json); TIMELINE=<file> records when each checkpoint was complete and when the process
# ended. Each step sleeps PACE s, so that the training, not the start-up, sets the timeline (no effect on results).
WRAPPER = """
import atexit, json, os, runpy, signal, sys, threading, time
import transformers

Trainer, env, clock, saves = transformers.Trainer, os.environ, {{}}, [0]
train, training_step = Trainer.train, Trainer.training_step
save_checkpoint, save_rng_state = Trainer._save_checkpoint, Trainer._save_rng_state


def note(event):
    if env.get("TIMELINE") and "start" in clock:
        with open(env["TIMELINE"], "a") as timeline:
            timeline.write(json.dumps([event, time.monotonic() - clock["start"]]) + "\\n")


def kill():
    os.kill(os.getpid(), signal.SIGKILL)


def timed_train(self, *args, **kwargs):
    clock["start"] = time.monotonic()
    if "KILL_AFTER" in env:
        timer = threading.Timer(float(env["KILL_AFTER"]), kill)
        timer.daemon = True
        timer.start()
    return train(self, *args, **kwargs)


def paced_training_step(self, *args, **kwargs):
    time.sleep({pace})
    return training_step(self, *args, **kwargs)


def noted_save_checkpoint(self, *args, **kwargs):
    save_checkpoint(self, *args, **kwargs)
    note(self.state.global_step)


def killed_while_saving(self, output_dir):
    saves[0] += 1
    if saves[0] == int(env.get("KILL_AT_SAVE", 0)):
        kill()
    save_rng_state(self, output_dir)


Trainer.train, Trainer.training_step = timed_train, paced_training_step
Trainer._save_checkpoint, Trainer._save_rng_state = noted_save_checkpoint, killed_while_saving
atexit.register(note, "end")
sys.argv = [{train_py!r}, *sys.argv[1:]]
runpy.run_path({train_py!r}, run_name="__main__")
"""
PACE = 0.1


def results_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())["splits"][0]


def test_a_run_killed_at_five_random_moments_resumes_to_the_uninterrupted_results(tmp_path, synthetic_dir):
    """Kill one run five times, resuming after each (always `--resume true`, which starts from scratch where there
    is no checkpoint yet): first inside a checkpoint write (the N-th save), then at four moments of its training
    timeline (from `Trainer.train`'s start to the process's end: training, checkpoint writes and rotation, the last
    evaluations, results.json). N and the moments come from the seeded `random.Random` below; each moment is drawn
    uniformly from the uninterrupted run's measured timeline after the checkpoint the attempt resumes from (so the
    attempt is still running then; one that ends first is not counted). The recipe's `save_total_limit: 2` makes
    the rotation delete folders. The final results equal the uninterrupted run's."""
    rng = random.Random(20260321)
    config = tiny_recipe(tmp_path, synthetic_dir, num_train_epochs=4, max_train_samples=256)
    wrapper = tmp_path / "train_wrapper.py"
    wrapper.write_text(WRAPPER.format(train_py=str(REPO_ROOT / "train.py"), pace=PACE))

    def train(output_dir: Path, **env) -> subprocess.CompletedProcess:
        command = [
            sys.executable,
            str(wrapper),
            "--config",
            str(config),
            "--save_model",
            "false",
            "--output_dir",
            str(output_dir),
            "--resume",
            "true",
        ]
        return subprocess.run(
            command,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, **{k: str(v) for k, v in env.items()}},
        )

    whole = train(tmp_path / "whole", TIMELINE=tmp_path / "timeline.jsonl")
    assert whole.returncode == 0, whole.stderr[-3000:]
    timeline = dict(json.loads(line) for line in (tmp_path / "timeline.jsonl").read_text().splitlines())
    end = timeline.pop("end")
    saved = {int(step): seconds for step, seconds in timeline.items()}  # step: when its checkpoint was complete
    assert len(saved) == 4, timeline  # one checkpoint per epoch

    run_dir = tmp_path / "killed"
    save = rng.randint(1, len(saved))
    killed = train(run_dir, KILL_AT_SAVE=save)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    half_written = next(run_dir.glob(f"split_0/lr_*/checkpoint-{sorted(saved)[save - 1]}"))
    assert (half_written / "model.safetensors").exists() and not (half_written / "trainer_state.json").exists()
    moments = [f"checkpoint write {save}"]

    for _ in range(12):
        if len(moments) == 5:
            break
        resumed = last_complete_checkpoint(next(run_dir.glob("split_0/lr_*")))
        start = saved[int(resumed.rsplit("-", 1)[1])] if resumed else 0.0
        moment = rng.uniform(start, end)
        attempt = train(run_dir, KILL_AFTER=moment - start)
        if attempt.returncode == -signal.SIGKILL:
            moments.append(f"{moment:.2f} s of {end:.2f} s")
        else:  # it ended before the moment
            assert attempt.returncode == 0, attempt.stderr[-3000:]
            print(f"ended before {moment:.2f} s of {end:.2f} s")
    assert len(moments) == 5, moments
    print("killed at:", moments)

    final = train(run_dir)
    assert final.returncode == 0, final.stderr[-3000:]
    expected, got = results_of(tmp_path / "whole"), results_of(run_dir)
    for part in ("validation", "test"):
        for name, value in expected[part].items():
            assert got[part][name] == pytest.approx(value, abs=1e-6), (part, name, moments)


# ----------------------------------------------------------------------------- API inputs
def test_numpy_images_of_every_dtype_score_like_their_uint8_pixels(quality_dir):
    scorer = PerceptScorer.from_pretrained(quality_dir, tta=1)
    pixels = np.asarray(random_image(3))
    expected = scorer(pixels)["score"]
    for array in (
        pixels.astype(np.int64),
        pixels.astype(np.int32),
        pixels / 255.0,
        pixels.astype(np.float32) / 255,
        pixels.astype(np.uint16) * 257,
        pixels.astype(np.uint16),  # an integer array is read by its range: 0..255 is 8 bits, whatever its dtype
        pixels.astype(np.int32) * 257,  # above 255: 16 bits
    ):
        assert scorer(array)["score"] == pytest.approx(expected, abs=1e-6), array.dtype
    white = scorer(np.full_like(pixels, 255))["score"]
    assert abs(scorer(pixels.astype(np.int64))["score"] - white) > 1e-4  # was read as all white
    for bad, message in (
        (pixels.astype(np.float64), "float images must hold 0..1"),
        (pixels.astype(np.int64) * 300, r"int64 array with values 0\.\.76500: integer images hold 0\.\.255"),
        (pixels.transpose(2, 0, 1).copy(), "channel-first"),
    ):
        with pytest.raises(ValueError, match=message):
            scorer(bad)


# ----------------------------------------------------------------------------- the error policy
def test_debug_shows_the_traceback_of_an_expected_error(photos, quality_dir, tmp_path):
    for result in (
        perceptclip("--debug", "predict", photos, "--model", quality_dir, "-o", "missing/x.csv", cwd=tmp_path),
        perceptclip(
            "predict",
            photos,
            "--model",
            quality_dir,
            "-o",
            "missing/x.csv",
            cwd=tmp_path,
            env={"PERCEPTCLIP_DEBUG": "1"},
        ),
    ):
        assert result.returncode == 1 and "Traceback" in result.stderr and "does not exist" in result.stderr


def test_the_documents_error_messages_cite_exist():
    root = Path(__file__).resolve().parents[1]
    cited = {
        match
        for path in (root / "perceptclip_hf").rglob("*.py")
        for match in re.findall(r"docs/[\w-]+\.md", path.read_text())
    }
    assert cited and all((root / doc).is_file() for doc in cited), cited


def test_unexpected_errors_keep_their_traceback(capsys):
    def bug() -> int:
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError):
        run_command("perceptclip predict", bug)

    def expected() -> int:
        raise UserError("photos/x.png: the fix")

    assert run_command("perceptclip predict", expected) == 2
    assert capsys.readouterr().err == "perceptclip predict: error: photos/x.png: the fix\n"


def test_emotion_model_output_resumes_with_its_own_columns(photos, tiny_clip_base, tmp_path):
    model = save_trained_like(tiny_clip_base, tmp_path / "emotion", PerceptCLIPForClassification, task="emotion")
    output = tmp_path / "emotions.csv"
    assert perceptclip("predict", photos / "im0.png", "--model", model, "-o", output, cwd=tmp_path).returncode == 0
    resumed = perceptclip("predict", photos, "--model", model, "-o", output, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "3 scored, 0 failed, 1 skipped" in resumed.stderr and len(read_rows(output)) == 4
