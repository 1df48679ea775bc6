"""What gets scored, and label files, as a user meets them.

Folders: symlinked folders (followed once, loops), images named ``.jfif`` / with no extension, ``class/sub/``
images, hidden files, empty classes: every file found is loaded or counted with its reason. Label files: not
UTF-8 (Latin-1, Windows-1252, UTF-16 from Excel), or listing one image twice. Failures go through the console
script (one line, exit status 2, no traceback); counts through the API, against what each test created.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

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
from perceptclip_hf.data.records import IMAGE_EXTENSIONS as RECORDS_IMAGE_EXTENSIONS

from tests.test_data_fixtures import make_emoset, make_koniq, make_lamem, make_things, make_tid2013, write_image

PLUGIN = """
from pathlib import Path
from perceptclip_hf.data import DatasetInfo, load_imagefolder, load_table, register_dataset

register_dataset(DatasetInfo("mine", "quality", lambda d, **kw: load_table(Path(d) / "scores.csv", **kw),
                             "test_only", (1.0, 5.0), num_splits=1))
register_dataset(DatasetInfo("mine_folder", "emotion", load_imagefolder, "test_only", num_splits=1))
"""


def perceptclip(tmp_path: Path, model: Path, dataset: str, data_dir: Path) -> subprocess.CompletedProcess:
    """``perceptclip --plugin myplugin evaluate ...`` in ``tmp_path``, as a user runs it."""
    (tmp_path / "myplugin.py").write_text(PLUGIN)
    script = shutil.which("perceptclip")
    command = [script] if script else [sys.executable, "-m", "perceptclip_hf.cli"]
    return subprocess.run([*command, "--plugin", "myplugin", "evaluate", "--model", str(model), "--dataset", dataset,
                           "--data-dir", str(data_dir)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TQDM_DISABLE": "1"})


def assert_one_error_line(result: subprocess.CompletedProcess, *parts: str) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("perceptclip evaluate: error: ")
    for part in parts:
        assert part in line, f"{part!r} not in {line!r}"
    return line


def save_as(path: Path, image_format: str, seed: int = 0) -> Path:
    """An image in ``image_format`` whatever the name says (the name may have another or no extension)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), (seed * 40 % 256, 90, 160)).save(path, format=image_format)
    return path


# ----------------------------------------------------------------------------- what gets scored: the walker
def test_image_extensions_live_in_files_and_include_jfif():
    assert RECORDS_IMAGE_EXTENSIONS is IMAGE_EXTENSIONS and {".jfif", ".jpe"} <= set(IMAGE_EXTENSIONS)


def test_walk_images_accounts_for_every_file_once(tmp_path):
    root, outside = tmp_path / "photos", tmp_path / "elsewhere"
    images = [write_image(root / "a.jpg"), save_as(root / "b.jfif", "JPEG"), save_as(root / "c.jpe", "JPEG"),
              save_as(root / "camera_download", "JPEG"), save_as(root / "export.dat", "PNG"),
              write_image(root / "sub" / "deep" / "d.png"), write_image(root / "sub" / "e.webp")]
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
        root / "notes.txt": "not an image", root / "._a.jpg": "hidden file", root / ".DS_Store": "hidden file",
        root / ".thumbnails": "hidden folder (not searched)",
        root / "linked_again": "symlink loop / already visited folder",
        root / "sub" / "loop": "symlink loop / already visited folder", root / "gone.jpg": "broken symlink",
    }

    result = walk_images(root)

    assert result.images == sorted(map(str, images), key=lambda p: Path(p).parts)
    assert dict(result.not_scored) == {str(p): reason for p, reason in expected_not_scored.items()}
    assert len(result.images) + len(result.not_scored) == len(images) + len(expected_not_scored)  # each once


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP", "JPEG2000", "AVIF", "QOI",
                                          "PPM"])
def test_sniff_recognises_what_pillow_writes(tmp_path, image_format):
    try:
        path = save_as(tmp_path / "no_extension", image_format)
    except (KeyError, OSError) as err:  # a Pillow build without this codec
        pytest.skip(f"Pillow cannot write {image_format}: {err}")
    assert sniff_image(path) and walk_images(tmp_path).images == [str(path)]


@pytest.mark.parametrize("content", [b"", b"hello", b"%PDF-1.4\n", b"path,score\na.jpg,3\n", b"P1 is a label\n",
                                     b"BMW 320i,4.5\n", b"RIFF\0\0\0\0WAVEfmt "])
def test_sniff_rejects_other_content(tmp_path, content):
    (tmp_path / "file").write_bytes(content)
    assert not sniff_image(tmp_path / "file")
    assert walk_images(tmp_path).not_scored == [(str(tmp_path / "file"), "not an image")]


# ----------------------------------------------------------------------------- what gets scored: image folders
def make_class_folders(root: Path, outside: Path) -> tuple[dict[str, str], dict[Path, str]]:
    """amusement/ (sub-folders, .jfif, no extension, a loop), awe -> a symlinked folder, anger/ (no image).

    Returns the images each class should load (name -> class) and the entries that should be reported."""
    loaded = {}
    for path in (write_image(root / "amusement" / "1.jpg"), write_image(root / "amusement" / "sub" / "2.png"),
                 save_as(root / "amusement" / "sub" / "deeper" / "3.jfif", "JPEG"),
                 save_as(root / "amusement" / "4", "JPEG")):
        loaded[path.relative_to(root).as_posix()] = "amusement"
    for path in (write_image(outside / "5.png"), save_as(outside / "6.jpe", "JPEG")):
        loaded[f"awe/{path.name}"] = "awe"
    (root / "awe").symlink_to(outside, target_is_directory=True)
    (root / "amusement" / "sub" / "loop").symlink_to(root, target_is_directory=True)
    (root / "amusement" / "notes.txt").write_text("shot in 2021")
    (root / "amusement" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    write_image(root / "stray.png")
    (root / "anger").mkdir()
    reported = {root / "amusement" / "notes.txt": "not an image", root / "amusement" / ".DS_Store": "hidden file",
                root / "amusement" / "sub" / "loop": "symlink loop / already visited folder",
                root / "stray.png": "not in a class folder", root / "anger": "class folder with no images"}
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
    result = perceptclip(tmp_path, emotion_dir, "mine_folder", tmp_path / "data")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert json.loads(result.stdout)["num_images"] == len(loaded)
    assert f"class folder {tmp_path / 'data' / 'anger'} has no images" in result.stderr


def test_cli_image_folder_with_nothing_to_load_is_one_error_line(tmp_path, emotion_dir):
    (tmp_path / "data" / "awe").mkdir(parents=True)
    (tmp_path / "data" / "awe" / "readme.txt").write_text("photos to come")
    result = perceptclip(tmp_path, emotion_dir, "mine_folder", tmp_path / "data")
    assert_one_error_line(result, "no usable rows", "readme.txt: not an image")


# ----------------------------------------------------------------------------- label files: encodings
TABLE = "path,score\na.jpg,3.0\n{name},4.0\n"


@pytest.mark.parametrize("encoding, name, line, byte, iconv", [
    ("latin1", "café.jpg", 3, "0xe9", "latin1"),
    ("utf-16", "café.jpg", 1, "0xff", "utf-16"),  # Excel's "Unicode text"
])
def test_cli_label_file_not_in_utf8_is_one_error_line(tmp_path, quality_dir, encoding, name, line, byte, iconv):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "scores.csv").write_bytes(TABLE.format(name=name).encode(encoding))
    result = perceptclip(tmp_path, quality_dir, "mine", tmp_path / "data")
    assert_one_error_line(result, f"scores.csv: line {line}: byte {byte} is not UTF-8",
                          f"iconv -f {iconv} -t utf-8 {tmp_path / 'data' / 'scores.csv'} > ")


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
        (root / "rows.jsonl").write_bytes('{"path": "a.jpg", "score": 3}\n{"path": "café.jpg", "score": 4}\n'
                                          .encode("latin1"))
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


@pytest.mark.parametrize("kind", ["csv", "tsv (Windows-1252)", "jsonl", "json", "koniq csv", "tid2013 text lines",
                                  "lamem split file", "things csv header", "emoset json", "split file"])
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
    result = perceptclip(tmp_path, quality_dir, "mine", tmp_path / "data")
    assert_one_error_line(result, "a.jpg is listed 2 times", "scores.csv: line 2 (label 3.0)",
                          "scores.csv: line 5 (label 4.5)", "duplicates='first'", "duplicates='mean'")


@pytest.mark.parametrize("first, second", [("a.jpg", "./a.jpg"), ("img/a.jpg", "img/../img/a.jpg"),
                                           ("img/a.jpg", "link/a.jpg")])
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
