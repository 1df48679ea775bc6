"""Inputs beyond files: the same AGIQA-3K images as a folder, as two WebDataset shards, as a Parquet file, as a
save_to_disk folder and as a streamed dataset folder give the same scores, each row named as specified (absolute
path, ``__key__``, row index or ``--id-column``); what cannot be read is an error row or a counted line, and bad
arguments are one line with exit status 2."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest
from datasets import Dataset, Features, Value
from datasets import Image as ImageFeature

from tests.helpers.cli import assert_clean_failure, perceptclip, perceptclip_process, read_rows
from tests.helpers.datasets import add_member
from tests.helpers.paths import AGIQA_DIR

COUNT = 12


@pytest.fixture(scope="module")
def agiqa_inputs(tmp_path_factory) -> dict:
    """12 AGIQA-3K images (every 250th) copied into a folder, 2 tar shards of 6 (plus a caption entry each), a
    Parquet file and a save_to_disk folder (with a ``name`` column)."""
    root = tmp_path_factory.mktemp("agiqa_inputs")
    sources = sorted((AGIQA_DIR / "images").glob("*.jpg"))[::250][:COUNT]
    assert len(sources) == COUNT, f"the AGIQA-3K images are missing under {AGIQA_DIR}"
    folder = root / "folder"
    folder.mkdir()
    for source in sources:
        shutil.copy(source, folder / source.name)
    (root / "shards").mkdir()
    keys = [f"{index:06d}" for index in range(COUNT)]
    for shard in range(2):
        with tarfile.open(root / "shards" / f"{shard:06d}.tar", "w") as tar:
            for key, source in list(zip(keys, sources))[shard * 6 : (shard + 1) * 6]:
                add_member(tar, f"{key}.jpg", source.read_bytes())
                add_member(tar, f"{key}.txt", source.stem.encode())
    features = Features({"image": ImageFeature(), "name": Value("string")})
    table = Dataset.from_dict(
        {
            "image": [{"bytes": source.read_bytes(), "path": None} for source in sources],
            "name": [source.name for source in sources],
        },
        features=features,
    )
    table.to_parquet(str(root / "table.parquet"))
    table.save_to_disk(str(root / "saved"))
    (root / "hub_like" / "data").mkdir(parents=True)
    table.to_parquet(str(root / "hub_like" / "data" / "train-00000-of-00001.parquet"))
    return {"root": root, "names": [source.name for source in sources], "keys": keys}


def predict(inputs: dict, *arguments, output: str):
    path = inputs["root"] / output
    result = perceptclip("predict", *arguments, "--output", path, "--tta", "3", "--batch-size", "4", cwd=inputs["root"])
    return result, path


def test_shards_parquet_and_saved_dataset_score_like_the_folder(agiqa_inputs, quality_dir):
    inputs, root = agiqa_inputs, agiqa_inputs["root"]
    result, mixed = predict(
        inputs,
        "folder",
        "shards/{000000..000001}.tar",
        "table.parquet",
        "--model",
        quality_dir,
        "--num-workers",
        "2",
        output="mixed.jsonl",
    )
    assert result.returncode == 0, result.stderr
    assert f"{3 * COUNT} scored, 0 failed, 0 skipped" in result.stderr
    rows = read_rows(mixed)
    folder_ids = sorted(str((root / "folder" / name).resolve()) for name in inputs["names"])
    assert [row["id"] for row in rows] == folder_ids + inputs["keys"] + [str(i) for i in range(COUNT)]
    by_name = {Path(row["id"]).name: row["score"] for row in rows[:COUNT]}
    expected = [by_name[name] for name in inputs["names"]]  # the folder's score of each image, in table order
    for part in (rows[COUNT : 2 * COUNT], rows[2 * COUNT :]):
        assert max(abs(row["score"] - score) for row, score in zip(part, expected)) < 1e-5

    result, saved = predict(inputs, "saved", "--model", quality_dir, output="saved.csv")
    assert result.returncode == 0, result.stderr
    saved_rows = read_rows(saved)
    assert [row["id"] for row in saved_rows] == [str(i) for i in range(COUNT)]
    assert max(abs(float(row["score"]) - score) for row, score in zip(saved_rows, expected)) < 1e-5

    result, streamed = predict(
        inputs,
        "--hf-dataset",
        "hub_like",
        "--streaming",
        "--id-column",
        "name",
        "--model",
        quality_dir,
        output="streamed.parquet",
    )
    assert result.returncode == 0, result.stderr
    streamed_rows = read_rows(streamed)
    assert [row["id"] for row in streamed_rows] == inputs["names"]
    assert max(abs(row["score"] - score) for row, score in zip(streamed_rows, expected)) < 1e-5


def test_shard_resume_skips_keys_already_scored(agiqa_inputs, quality_dir):
    inputs = agiqa_inputs
    first, output = predict(inputs, "shards/000000.tar", "--model", quality_dir, output="resumed.csv")
    assert first.returncode == 0, first.stderr
    result, _ = predict(inputs, "shards/{000000..000001}.tar", "--model", quality_dir, "--resume", output="resumed.csv")
    assert result.returncode == 0, result.stderr
    assert "6 scored, 0 failed, 6 skipped" in result.stderr
    assert [row["id"] for row in read_rows(output)] == inputs["keys"]


def test_unreadable_shard_entries_are_error_rows_and_counted(agiqa_inputs, quality_dir, tmp_path):
    """A sample without an image entry is an error row under its key; a shard cut short is reported, counted and
    its other samples still scored; an empty Parquet cell is an error row under its row index."""
    shards = tmp_path / "shards"
    shards.mkdir()
    source = sorted((AGIQA_DIR / "images").glob("*.jpg"))[0].read_bytes()
    with tarfile.open(shards / "a.tar", "w") as tar:
        add_member(tar, "k1.jpg", source)
        add_member(tar, "k2.json", b"{}")
        add_member(tar, "k3.png", source)
    whole = io.BytesIO()
    with tarfile.open(fileobj=whole, mode="w") as tar:
        for index in range(3):
            add_member(tar, f"cut{index}.webp", source)
    (shards / "b.tar").write_bytes(whole.getvalue()[: 2 * 512 + len(source) + 700])  # inside the 2nd member
    table = tmp_path / "holes.parquet"
    Dataset.from_dict(
        {"image": [{"bytes": source, "path": None}, None]}, features=Features({"image": ImageFeature()})
    ).to_parquet(str(table))
    output = tmp_path / "rows.jsonl"
    result = perceptclip(
        "predict",
        shards / "a.tar",
        shards / "b.tar",
        table,
        "--model",
        quality_dir,
        "--output",
        output,
        "--tta",
        "1",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    rows = {row["id"]: row for row in read_rows(output)}
    assert list(rows) == ["k1", "k2", "k3", "cut0", "0", "1"]
    assert "error" not in rows["k1"] and "error" not in rows["k3"] and "error" not in rows["cut0"]
    assert "k2 has no image entry" in rows["k2"]["error"] and "json" in rows["k2"]["error"]
    assert "row 1: no image" in rows["1"]["error"]
    assert "4 scored, 2 failed, 0 skipped; 1 not scored" in result.stderr
    assert f"not scored: {shards / 'b.tar'}: cannot be read further" in result.stderr
    record = json.loads(Path(f"{output}.meta.json").read_text())
    assert record["runs"][-1]["not_scored"][0].startswith(f"{shards / 'b.tar'}: cannot be read further")


@pytest.mark.parametrize(
    "arguments, fragments",
    [
        (["shards/{000000..000002}.tar"], ["shards/000002.tar does not exist"]),
        (
            ["table.parquet", "--image-column", "picture"],
            ["table.parquet", "no column 'picture'", "image, name", "--image-column"],
        ),
        (["table.parquet", "--image-column", "name"], ["column 'name' holds string", "--image-column"]),
        (["table.parquet", "saved"], ["row indexes", "--id-column"]),
        (["folder", "--id-column", "name"], ["--id-column names rows of Parquet"]),
        (["saved", "--id-column", "label"], ["saved: no column 'label'"]),
        (["--streaming", "folder"], ["--streaming streams --hf-dataset"]),
        (["--hf-dataset", "no-such-org/no-such-dataset"], ["--hf-dataset no-such-org/no-such-dataset"]),
    ],
)
def test_bad_inputs_exit_2_with_one_line(agiqa_inputs, quality_dir, arguments, fragments):
    # HF_HUB_OFFLINE is read when huggingface_hub is imported: the Hub dataset case runs in a process of its own
    # (in this one it would try the network until it times out)
    run = perceptclip_process if "--hf-dataset" in arguments else perceptclip
    result = run("predict", *arguments, "--model", quality_dir, cwd=agiqa_inputs["root"], env={"HF_HUB_OFFLINE": "1"})
    assert_clean_failure(result, *fragments)
