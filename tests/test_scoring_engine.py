"""Scoring at scale: worker processes give the in-process rows in input order (every output format, the Python API),
LoRA is folded into the base weights for scoring without changing a score, Parquet outputs survive a kill, and
--fast-decode (JPEG draft decoding) is exact about what it reduces and never mixed with full decodes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from datasets import Dataset

from perceptclip_hf.data import DatasetFormatError
from perceptclip_hf.data.images import open_image
from perceptclip_hf.preprocessing import IQATestTransform, ResizeCenterCropTransform
from perceptclip_hf.scoring.input_pipeline import prepare_image, source_windows
from perceptclip_hf.scoring.scorer import PerceptScorer
from tests.helpers.cli import assert_clean_failure, kill_after_lines, perceptclip, read_rows, sha256
from tests.helpers.models import random_image

BROKEN = "broken.jpg"


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> Path:
    """31 images of different sizes (so of different scores) and one unreadable file in the middle."""
    folder = tmp_path_factory.mktemp("photos")
    for index in range(31):
        random_image(index, size=(40 + index % 7 * 5, 36 + index % 5 * 4)).save(folder / f"im{index:02d}.png")
    (folder / BROKEN).write_bytes(b"not a jpeg")
    return folder


def one_by_one(model_dir: Path, paths: list[str]) -> list[dict]:
    """The reference: an unmerged, in-process scorer called on one image at a time."""
    scorer = PerceptScorer.from_pretrained(model_dir, tta=3, num_workers=0, merge_lora=False)
    return [scorer([path], on_error="record")[0] for path in paths]


def test_worker_rows_equal_in_process_rows_and_one_image_at_a_time(photo_folder, quality_dir, tmp_path):
    """--num-workers 2 into each format, --num-workers 0 into CSV: the same rows, in the same order, as an
    in-process scorer called on one image at a time."""
    rows = {}
    for workers, suffix in ((0, ".csv"), (2, ".csv"), (2, ".jsonl"), (2, ".parquet")):
        output = tmp_path / f"workers{workers}{suffix}"
        result = perceptclip(
            "predict",
            photo_folder,
            "--model",
            quality_dir,
            "--output",
            output,
            "--tta",
            "3",
            "--batch-size",
            "4",
            "--num-workers",
            workers,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        assert "31 scored, 1 failed" in result.stderr
        assert json.loads(Path(f"{output}.meta.json").read_text())["runs"][-1]["num_workers"] == workers
        rows[workers, suffix] = read_rows(output)
    paths = [row["id"] for row in rows[0, ".csv"]]
    assert len(paths) == 32 and all([row["id"] for row in part] == paths for part in rows.values())
    reference = one_by_one(quality_dir, paths)
    for part in rows.values():
        for row, expected in zip(part, reference):
            if row["id"].endswith(BROKEN):
                assert BROKEN in row["error"] and "error" in expected
            else:
                assert abs(float(row["score"]) - expected["score"]) < 1e-5, (row, expected)
    metadata = json.loads(pq.read_schema(output).metadata[b"perceptclip"])
    assert metadata["settings"] == {"crops": 3, "seed": 0} and metadata["task"] == "quality"
    assert metadata["runs"][-1]["model"] == str(quality_dir) and metadata["model_fingerprint"]


def test_classification_parquet_rows_carry_a_column_per_class(photo_folder, emotion_dir, tmp_path):
    output = tmp_path / "emotions.parquet"
    result = perceptclip(
        "predict",
        photo_folder,
        "--model",
        emotion_dir,
        "--output",
        output,
        "--num-workers",
        2,
        "--batch-size",
        8,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    rows = read_rows(output)
    scorer = PerceptScorer.from_pretrained(emotion_dir, num_workers=0, merge_lora=False)
    assert len(rows) == 32
    for row in [row for row in rows if not row["error"]][:3]:
        expected = scorer(row["id"])
        assert row["label"] == expected["label"]
        assert [row[f"prob_{label}"] for label in scorer.labels] == pytest.approx(
            list(expected["probabilities"].values()), abs=1e-5
        )


def test_scorer_prepares_images_in_worker_processes_in_input_order(photo_folder, quality_dir, tmp_path):
    paths = sorted(str(path) for path in photo_folder.iterdir())[:20]
    assert paths.index(str(photo_folder / BROKEN)) == 0
    paths = paths[1:6] + paths[:1] + paths[6:]  # the broken file sixth
    in_process = PerceptScorer.from_pretrained(quality_dir, tta=3, batch_size=4, num_workers=0)
    workers = PerceptScorer.from_pretrained(quality_dir, tta=3, batch_size=4, num_workers=2)
    pid_log = tmp_path / "pids"
    pixels = workers.transform.pixels

    def logged(image, key):
        with open(pid_log, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        return pixels(image, key)

    workers.transform.pixels = logged
    expected = in_process(paths, on_error="record")
    for results in (
        workers(paths, on_error="record"),
        list(workers.iter_predictions(iter(paths), "record")),
        workers(Dataset.from_dict({"image": paths}), on_error="record"),
    ):
        assert BROKEN in results[5]["error"] and BROKEN in expected[5]["error"]
        others = [(a["score"], b["score"]) for i, (a, b) in enumerate(zip(results, expected)) if i != 5]
        assert max(abs(a - b) for a, b in others) < 1e-5
    pids = set(map(int, pid_log.read_text().split()))
    assert os.getpid() not in pids and len(pids) >= 2
    with pytest.raises(DatasetFormatError, match=BROKEN):
        workers(paths)


def test_generators_are_read_in_windows():
    windows = [[image for image, _ in window] for window in source_windows(iter(range(10)), 4)]
    assert windows == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


@pytest.mark.parametrize("model", ["quality_dir", "emotion_dir"])
def test_lora_is_merged_for_scoring_same_outputs_saved_model_untouched(model, request):
    model_dir = request.getfixturevalue(model)
    before = {path.name: sha256(path) for path in model_dir.iterdir() if path.is_file()}
    merged = PerceptScorer.from_pretrained(model_dir, tta=3)
    unmerged = PerceptScorer.from_pretrained(model_dir, tta=3, merge_lora=False)
    assert merged.lora_merged == 6 and unmerged.lora_merged == 0  # 2 layers × q, k, v
    name = "backbone.vision_model.encoder.layers.0.self_attn.q_proj.base_layer.weight"
    weights = dict(merged.model.named_parameters()), dict(unmerged.model.named_parameters())
    assert (weights[0][name] - weights[1][name]).abs().max() > 1e-3  # LoRA is in the base weight now
    images = [random_image(index, size=(48, 40)) for index in range(5)]
    with torch.no_grad():
        pixels = torch.stack([merged.preprocess(image) for image in images])
        assert (merged.predict_logits(pixels) - unmerged.predict_logits(pixels)).abs().max() < 1e-5
    assert merged.fingerprint() == unmerged.fingerprint()
    assert {path.name: sha256(path) for path in model_dir.iterdir() if path.is_file()} == before


def test_parquet_output_killed_midway_resumes_to_the_uninterrupted_rows(quality_dir, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for index in range(240):
        random_image(index, size=(48, 40)).save(folder / f"im{index:03d}.png")
    options = ["--tta", "3", "--batch-size", "2", "--num-workers", "0"]
    whole = tmp_path / "whole.parquet"
    assert perceptclip("predict", folder, "--model", quality_dir, "-o", whole, *options, cwd=tmp_path).returncode == 0
    output = tmp_path / "killed.parquet"
    pending = Path(f"{output}.pending.jsonl")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "perceptclip_hf.cli",
            "predict",
            str(folder),
            "--model",
            str(quality_dir),
            "-o",
            str(output),
            *options,
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    done = kill_after_lines(process, pending)
    assert not output.exists() and 6 <= done < 240  # killed mid-run: its rows wait in the pending file
    resumed = perceptclip("predict", folder, "--model", quality_dir, "-o", output, "--resume", *options, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{240 - done} scored, 0 failed, {done} skipped" in resumed.stderr
    assert not pending.exists()
    expected = {row["id"]: row["score"] for row in read_rows(whole)}
    rows = read_rows(output)
    assert len(rows) == 240 and {row["id"] for row in rows} == set(expected)
    assert max(abs(row["score"] - expected[row["id"]]) for row in rows) < 1e-6


def test_a_damaged_parquet_output_stops_resume_and_is_left_untouched(photo_folder, quality_dir, tmp_path):
    output = tmp_path / "scores.parquet"
    assert (
        perceptclip(
            "predict", photo_folder, "--model", quality_dir, "-o", output, "--tta", "2", cwd=tmp_path
        ).returncode
        == 0
    )
    output.write_bytes(output.read_bytes()[:-40])  # the footer is gone
    before = sha256(output)
    resumed = perceptclip(
        "predict", photo_folder, "--model", quality_dir, "-o", output, "--tta", "2", "--resume", cwd=tmp_path
    )
    assert_clean_failure(resumed, str(output), "Parquet", "untouched")
    assert sha256(output) == before


def test_fast_decode_reads_jpegs_at_the_smallest_draft_scale_the_resize_allows(tmp_path):
    jpeg, png = tmp_path / "photo.jpg", tmp_path / "photo.png"
    random_image(3, size=(200, 160)).save(jpeg, quality=95)
    random_image(3, size=(200, 160)).save(png)
    assert open_image(str(jpeg), lambda size: 0.2).size == (50, 40)  # 1/4: 1/8 would be below 0.2
    assert open_image(str(jpeg), lambda size: 0.6).size == (200, 160)  # no reduction reaches 0.6
    assert open_image(str(png), lambda size: 0.2).size == (200, 160)  # draft mode is JPEG only
    single_crop = ResizeCenterCropTransform(32)
    assert single_crop.min_decode_scale((200, 160)) == 32 / 160
    fast, full = prepare_image(single_crop, str(jpeg), fast_decode=True), prepare_image(single_crop, str(jpeg))
    assert fast.dtype == full.dtype == torch.uint8 and fast.shape == full.shape == (3, 32, 32)
    assert 0 < (fast.float() - full.float()).abs().mean() < 20
    assert torch.equal(prepare_image(single_crop, str(png), fast_decode=True), prepare_image(single_crop, str(png)))
    native_crops = IQATestTransform(32, num_crops=3)  # crops of the stored pixels: nothing to reduce
    assert torch.equal(
        prepare_image(native_crops, str(jpeg), "k", fast_decode=True), prepare_image(native_crops, str(jpeg), "k")
    )


def test_fast_decode_scores_are_recorded_and_not_mixed_with_full_decodes(emotion_dir, tmp_path):
    folder = tmp_path / "jpegs"
    folder.mkdir()
    for index in range(3):
        random_image(index, size=(240, 200)).save(folder / f"im{index}.jpg", quality=90)
    output = tmp_path / "emotions.jsonl"
    result = perceptclip("predict", folder, "--model", emotion_dir, "-o", output, "--fast-decode", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    scorer = PerceptScorer.from_pretrained(emotion_dir, fast_decode=True, num_workers=0)
    for row in read_rows(output):
        assert list(row["probabilities"].values()) == pytest.approx(
            list(scorer(row["id"])["probabilities"].values()), abs=1e-5
        )
    assert json.loads(Path(f"{output}.meta.json").read_text())["settings"]["fast_decode"] is True
    before = sha256(output)
    mixed = perceptclip("predict", folder, "--model", emotion_dir, "-o", output, "--resume", cwd=tmp_path)
    assert_clean_failure(mixed, str(output), "fast_decode")
    assert sha256(output) == before
