"""Misuse, faults and bad input, family by family, run as a user runs the commands (subprocesses): every expected
failure is one line naming the file/field/id with exit status 2 and no traceback; no file of the user's is touched;
nothing found is dropped silently."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from perceptclip_hf.errors import UserError, run_command
from perceptclip_hf.inference import PerceptScorer
from perceptclip_hf import PerceptCLIPForClassification
from tests.conftest import random_image, save_trained_like


def perceptclip(*args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "perceptclip_hf.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "TQDM_DISABLE": "1", **(env or {})})


def assert_clean_failure(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit status 2, no traceback, and the error line names every fragment; returns the error line."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_rows(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(4):
        random_image(index).save(folder / f"im{index}.png")
    return folder


def predict(photos: Path, model: Path, output: Path, *extra, cwd: Path | None = None):
    return perceptclip("predict", photos, "--model", model, "--output", output, "--tta", "2", *extra,
                       cwd=cwd or photos.parent)


# ----------------------------------------------------------------------------- the user's files
@pytest.mark.parametrize("content", [
    b"path,score\nim0.png,3.5\nim1.png,4.0",  # the user's label CSV, without a final newline (was cut)
    b"path,score,score_min,score_max,higher_is_better,error\nim0.png,1,1,5,True,\n",  # our columns, not our file
    b'{"path": "im0.png", "score": 1.0}\n{"path": "im1.png"',  # a JSONL file of someone else's
])
@pytest.mark.parametrize("option", ["--resume", "--overwrite"])
def test_resume_or_overwrite_of_a_foreign_file_leaves_it_byte_identical(content, option, photos, quality_dir,
                                                                        tmp_path):
    output = tmp_path / ("labels.jsonl" if content.startswith(b"{") else "labels.csv")
    output.write_bytes(content)
    before = sha256(output)
    result = predict(photos, quality_dir, output, option)
    assert_clean_failure(result, str(output), "not written by perceptclip predict", "left untouched")
    assert sha256(output) == before
    assert not Path(f"{output}.meta.json").exists() and sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["photos", output.name])


def test_resume_with_another_model_or_settings_leaves_the_output_as_it_was(photos, quality_dir, tiny_clip_base,
                                                                            tmp_path):
    output = tmp_path / "scores.csv"
    assert predict(photos, quality_dir, output).returncode == 0
    files = {path: sha256(path) for path in (output, Path(f"{output}.meta.json"))}
    other = save_trained_like(tiny_clip_base, tmp_path / "other", task="quality", score_range=[1.0, 5.0], seed=7)
    assert_clean_failure(predict(photos, other, output, "--resume"), "another model or settings", "model_fingerprint")
    assert_clean_failure(perceptclip("predict", photos, "--model", quality_dir, "-o", output, "--tta", "3", "--resume",
                                     cwd=tmp_path), "settings", "'crops': 2", "'crops': 3")
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
    assert all(Path(row["path"]).is_absolute() for row in read_rows(output))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    resumed = perceptclip("predict", "../photos", "--model", quality_dir, "-o", "../scores.csv", "--tta", "2",
                          "--resume", cwd=elsewhere)
    assert resumed.returncode == 0, resumed.stderr
    assert "0 scored, 0 failed, 4 skipped" in resumed.stderr
    assert len(read_rows(output)) == 4


@pytest.mark.parametrize("output_name, fragment", [
    ("missing/scores.csv", "does not exist"),  # a folder that is not there
    ("notes.txt/scores.csv", "is a file, not a folder"),
    ("/proc/scores.csv", "cannot write"),  # read-only even for root
])
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
    assert_clean_failure(perceptclip("evaluate", "--model", quality_dir, "--dataset", "koniq10k", "--data-dir", photos,
                                     "--output", mine / "metrics.json", cwd=tmp_path),
                         str(mine / "metrics.json"), "not written by perceptclip evaluate")
    assert_clean_failure(perceptclip("explain", photos, "--model", quality_dir, "--out", mine, cwd=tmp_path),
                         "--out", "not written by perceptclip explain")
    assert_clean_failure(perceptclip("push", "--model-dir", quality_dir, "--repo-id", "me/x", "--dry-run", mine,
                                     cwd=tmp_path), str(mine), "not empty")
    assert {path: sha256(path) for path in mine.iterdir()} == before


def test_explain_continues_its_own_folder(photos, quality_dir, tmp_path):
    out = tmp_path / "explained"
    for _ in range(2):
        result = perceptclip("explain", photos / "im0.png", "--model", quality_dir, "--out", out, "--top-k", "1",
                             cwd=tmp_path)
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
    result = perceptclip("predict", library, f"{library}/**", "--model", quality_dir, "-o", output, "--tta", "1",
                         cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = read_rows(output)
    real = [os.path.realpath(row["path"]) for row in rows]
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
    assert_clean_failure(perceptclip("predict", "docs", "--model", quality_dir, cwd=tmp_path), "no images found",
                         "2 files that are not images")


# ----------------------------------------------------------------------------- corrupt artefacts
@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_corrupt_weights_file_is_named(damage, photos, quality_dir, tmp_path):
    model = shutil.copytree(quality_dir, tmp_path / "model")
    weights = model / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"truncated": data[: len(data) // 2], "garbage": os.urandom(500), "empty": b""}[damage])
    assert_clean_failure(perceptclip("predict", photos, "--model", model, cwd=tmp_path), str(weights),
                         "corrupt or truncated", "again")


def test_a_corrupt_base_backbone_is_named(photos, quality_dir, tiny_clip_base, tmp_path):
    base = shutil.copytree(tiny_clip_base, tmp_path / "base")
    (base / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    result = perceptclip("predict", photos, "--model", quality_dir, "--base-model", base, cwd=tmp_path)
    assert_clean_failure(result, str(base / "model.safetensors"), "corrupt")


def test_an_unreachable_hub_id_names_the_id_and_the_local_copy_fix(photos, tmp_path):
    result = perceptclip("predict", photos, "--model", "someone/perceptclip-missing", cwd=tmp_path,
                         env={"HF_HUB_OFFLINE": "1"})
    assert_clean_failure(result, "someone/perceptclip-missing", "hf download someone/perceptclip-missing")


def test_push_without_the_hub_names_the_repo_and_the_offline_route(quality_dir, tmp_path):
    offline = {"HF_HUB_OFFLINE": "1"}
    upload = perceptclip("push", "--model-dir", quality_dir, "--repo-id", "me/perceptclip-x", cwd=tmp_path,
                         env=offline)
    assert_clean_failure(upload, "--repo-id me/perceptclip-x", "--dry-run DIR")
    official = perceptclip("push", "--from-official", "PerceptCLIP/PerceptCLIP_IQA", "--repo-id", "me/x", "--dry-run",
                           tmp_path / "repo", cwd=tmp_path, env=offline)
    assert_clean_failure(official, "PerceptCLIP/PerceptCLIP_IQA", "hf download PerceptCLIP/PerceptCLIP_IQA")


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_damaged_line_in_our_output_stops_resume_and_touches_nothing(suffix, photos, quality_dir, tmp_path):
    output = tmp_path / f"scores{suffix}"
    assert predict(photos, quality_dir, output).returncode == 0
    lines = output.read_bytes().splitlines(keepends=True)
    lines[2] = b'{"path": "/x.png", "sco\n' if suffix == ".jsonl" else b"/x/caf\xe9.png,1,1,5,True,\n"
    output.write_bytes(b"".join(lines))
    before = sha256(output)
    assert_clean_failure(predict(photos, quality_dir, output, "--resume"), str(output), "line 3",
                         "untouched")
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
    assert [row["path"] for row in rows] == [row["path"] for row in complete]
    assert [float(row["score"]) for row in rows] == pytest.approx([float(row["score"]) for row in complete], abs=1e-5)


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
    assert len({row["path"] for row in rows}) == 5


# ----------------------------------------------------------------------------- API inputs
def test_numpy_images_of_every_dtype_score_like_their_uint8_pixels(quality_dir):
    scorer = PerceptScorer.from_pretrained(quality_dir, tta=1)
    pixels = np.asarray(random_image(3))
    expected = scorer(pixels)["score"]
    for array in (pixels.astype(np.int64), pixels.astype(np.int32), pixels / 255.0, pixels.astype(np.float32) / 255,
                  pixels.astype(np.uint16) * 257):
        assert scorer(array)["score"] == pytest.approx(expected, abs=1e-6), array.dtype
    white = scorer(np.full_like(pixels, 255))["score"]
    assert abs(scorer(pixels.astype(np.int64))["score"] - white) > 1e-4  # was read as all white
    for bad, message in ((pixels.astype(np.float64), "float images must hold 0..1"),
                         (pixels.astype(np.int64) * 4, "integer images must hold 0..255"),
                         (pixels.transpose(2, 0, 1).copy(), "channel-first")):
        with pytest.raises(ValueError, match=message):
            scorer(bad)


# ----------------------------------------------------------------------------- the error policy
def test_debug_shows_the_traceback_of_an_expected_error(photos, quality_dir, tmp_path):
    for result in (perceptclip("--debug", "predict", photos, "--model", quality_dir, "-o", "missing/x.csv",
                               cwd=tmp_path),
                   perceptclip("predict", photos, "--model", quality_dir, "-o", "missing/x.csv", cwd=tmp_path,
                               env={"PERCEPTCLIP_DEBUG": "1"})):
        assert result.returncode == 1 and "Traceback" in result.stderr and "does not exist" in result.stderr


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
