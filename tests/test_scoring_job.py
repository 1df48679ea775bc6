"""The scoring job as a library call: `perceptclip_hf.scoring.score` writes the rows `perceptclip predict` writes,
survives SIGKILL and resumes through the same call, and says what it did in its summary."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from io import BytesIO
from pathlib import Path

import pytest

from perceptclip_hf import score
from perceptclip_hf.scoring import PerceptScorer, ScoringSummary
from tests.helpers.cli import kill_after_lines, perceptclip, read_rows
from tests.helpers.datasets import add_member
from tests.helpers.models import random_image

FOLDER_IMAGES, SHARD_IMAGES = 50, 2 * 25
OPTIONS = dict(tta=2, batch_size=2, num_workers=0)
CLI_OPTIONS = ["--tta", "2", "--batch-size", "2", "--num-workers", "0"]


@pytest.fixture(scope="module")
def mixed_inputs(tmp_path_factory) -> list[str]:
    """A folder of images and two WebDataset shards of others: the two input kinds of one job."""
    root = tmp_path_factory.mktemp("mixed_inputs")
    (root / "photos").mkdir()
    for index in range(FOLDER_IMAGES):
        random_image(index, size=(48, 40)).save(root / "photos" / f"im{index:03d}.png")
    (root / "shards").mkdir()
    for shard in range(2):
        with tarfile.open(root / "shards" / f"{shard:06d}.tar", "w") as tar:
            for index in range(shard * 25, (shard + 1) * 25):
                buffer = BytesIO()
                random_image(1000 + index, size=(40, 52)).save(buffer, format="PNG")
                add_member(tar, f"{index:06d}.png", buffer.getvalue())
    return [str(root / "photos"), str(root / "shards" / "{000000..000001}.tar")]


def test_a_killed_job_resumes_through_the_api_to_the_rows_perceptclip_predict_writes(
    mixed_inputs, quality_dir, emotion_dir, tmp_path
):
    models = [str(quality_dir), str(emotion_dir)]
    whole = tmp_path / "predict.parquet"
    command = ["predict", *mixed_inputs, "--model", models[0], "--model", models[1], "-o", whole, *CLI_OPTIONS]
    assert perceptclip(*command, cwd=tmp_path).returncode == 0

    output = tmp_path / "job.parquet"
    pending = Path(f"{output}.pending.jsonl")
    job = (
        f"from perceptclip_hf.scoring import score\nscore({mixed_inputs!r}, {models!r}, {str(output)!r}, **{OPTIONS!r})"
    )
    process = subprocess.Popen([sys.executable, "-c", job], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = kill_after_lines(process, pending)
    total = FOLDER_IMAGES + SHARD_IMAGES
    assert not output.exists() and 6 <= done < total  # killed mid-run: its rows wait in the pending file

    summary = score(mixed_inputs, models, output, resume=True, **OPTIONS)
    assert isinstance(summary, ScoringSummary) and summary.output == str(output)
    assert (summary.scored, summary.failed, summary.skipped, summary.not_scored) == (total - done, 0, done, [])
    assert not pending.exists()
    expected = read_rows(whole)
    rows = read_rows(output)
    assert [row["id"] for row in rows] == [row["id"] for row in expected]  # the same inputs, in the same order
    assert len(rows) == total and all(same_row(row, other) for row, other in zip(rows, expected))
    assert {"quality_score", "emotion_label", "emotion_prob_awe"} <= set(rows[0])


def same_row(row: dict, other: dict) -> bool:
    """The same columns and values; scores and probabilities within 1e-6 (measured equal to the last bit here, but
    another process's BLAS may sum in another order)."""
    return row.keys() == other.keys() and all(
        abs(value - other[key]) <= 1e-6 if isinstance(value, float) else value == other[key]
        for key, value in row.items()
    )


def test_without_an_output_the_rows_come_back_with_what_was_not_scored(mixed_inputs, quality_dir, tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    image = tmp_path / "one.png"
    random_image(3).save(image)
    messages = []
    summary = score([str(tmp_path)], quality_dir, report=messages.append, tta=3, num_workers=0)
    assert (summary.scored, summary.failed, summary.skipped, summary.output) == (1, 0, 0, None)
    assert summary.not_scored == [(str(tmp_path / "notes.txt"), "not an image")]
    assert f"not scored: {tmp_path / 'notes.txt'}: not an image" in messages
    (row,) = summary.rows
    expected = PerceptScorer.from_pretrained(quality_dir, tta=3, num_workers=0)(str(image))["score"]
    assert row["id"] == str(image) and row["score"] == pytest.approx(expected, abs=1e-6)
    assert str(summary).startswith("summary: 1 scored, 0 failed, 0 skipped; 1 not scored (1 not an image)")
