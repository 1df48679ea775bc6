"""Scoring on Ray Data (perceptclip_hf.integrations.ray): `perceptclip predict --engine ray`, `score_with_ray` and
`PerceptCLIPPredictor` in a user's own `map_batches` give the local engine's rows (same ids, scores within 1e-5,
error rows) for a folder, WebDataset shards and a Parquet table, with one model and with two, on real AGIQA-3K
images; a model actor killed mid-run and a killed driver followed by --resume lose and repeat no row.

One Ray (`ray.init(num_cpus=2)`) serves the whole session; these tests run in one pytest-xdist worker (group
"ray", `--dist loadgroup`)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.helpers.cli import assert_clean_failure, free_port, perceptclip, perceptclip_command
from tests.helpers.datasets import add_member
from tests.helpers.paths import AGIQA_DIR

ray = pytest.importorskip("ray", reason="the [ray] extra is not installed (the dev extra installs it)")
pytestmark = pytest.mark.xdist_group("ray")
IMAGES, SHARD_SAMPLES, MANY = 16, 4, 120
SETTINGS = dict(tta=3, batch_size=4)


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray of 2 CPUs for the session (the machine's size: the engine must not deadlock on it)."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning", log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    """16 AGIQA-3K images and a file that is not one in a folder; 2 tar shards of 4 samples, one of them without
    an image; a Parquet table of 6 images in 2 row groups."""
    root = tmp_path_factory.mktemp("ray_inputs")
    sources = sorted((AGIQA_DIR / "images").glob("*.jpg"))[::150][:IMAGES]
    assert len(sources) == IMAGES, f"the AGIQA-3K images are missing under {AGIQA_DIR}"
    folder = root / "folder"
    folder.mkdir()
    for source in sources:
        shutil.copy(source, folder / source.name)
    (folder / "broken.jpg").write_bytes(b"not a JPEG")
    (root / "shards").mkdir()
    for shard in range(2):
        with tarfile.open(root / "shards" / f"{shard:06d}.tar", "w") as tar:
            for index in range(SHARD_SAMPLES):
                key = f"{shard}{index:05d}"
                if (shard, index) == (1, 2):
                    add_member(tar, f"{key}.txt", b"a caption, no image")
                else:
                    add_member(tar, f"{key}.jpg", sources[shard * SHARD_SAMPLES + index].read_bytes())
    table = pa.table({"image": [{"bytes": source.read_bytes(), "path": None} for source in sources[:6]]})
    pq.write_table(table, root / "table.parquet", row_group_size=3)
    many = root / "many"  # enough work for a kill to land mid-run
    many.mkdir()
    for source in sorted((AGIQA_DIR / "images").glob("*.jpg"))[::20][:MANY]:
        shutil.copy(source, many / source.name)
    return {"root": root, "folder": folder, "shards": str(root / "shards" / "{000000..000001}.tar"), "many": many}


def local_rows(paths, models, **settings) -> dict[str, dict]:
    from perceptclip_hf.scoring import score

    summary = score(paths, models, None, num_workers=0, **settings)
    return {row["id"]: flat(row) for row in summary.rows}


def flat(row: dict) -> dict:
    from perceptclip_hf.scoring.score_formats import csv_row

    return csv_row(row)


def folder_rows(folder: Path) -> list[dict]:
    return pq.read_table(folder, columns=None).to_pylist() if any(folder.glob("*.parquet")) else []


def assert_same_rows(rows: list[dict], expected: dict[str, dict]) -> None:
    """The same ids once each, the same columns, numbers within 1e-5, the same labels and the same rows failed."""
    ids = [row["id"] for row in rows]
    assert len(ids) == len(set(ids)), "an id is written twice"
    assert set(ids) == set(expected)
    for row in rows:
        want = expected[row["id"]]
        assert (row["error"] is None) == (want.get("error") is None), (row, want)
        for column, value in want.items():
            if isinstance(value, float):
                assert abs(row[column] - value) <= 1e-5, (row["id"], column, row[column], value)
            elif column != "error":
                assert row[column] == value, (row["id"], column)


def test_the_ray_engine_gives_the_local_rows_of_a_folder_shards_and_a_parquet_table(
    ray_cluster, inputs, quality_dir, emotion_dir, tmp_path
):
    from perceptclip_hf.integrations.ray import score_with_ray

    paths = [str(inputs["folder"]), inputs["shards"], str(inputs["root"] / "table.parquet")]
    models = {"quality": str(quality_dir), "emotion": str(emotion_dir)}
    output = tmp_path / "scores"
    summary = score_with_ray(paths, models, output, rows_per_file=8, progress=False, **SETTINGS)
    expected = local_rows(paths, models, **SETTINGS)
    rows = folder_rows(output)
    assert_same_rows(rows, expected)
    scored_row = next(row for row in expected.values() if row.get("error") is None)
    assert list(rows[0]) == [*scored_row, "error"]
    failed = sum(row.get("error") is not None for row in expected.values())
    assert (summary.scored, summary.failed, summary.skipped) == (len(expected) - failed, failed, 0)
    assert failed == 2  # the broken file and the sample without an image
    record = json.loads((output / "_perceptclip.json").read_text())
    assert record["engine"] == "ray" and set(record["models"]) == {"quality", "emotion"}
    assert record["runs"][-1]["completed"] and record["runs"][-1]["scored"] == summary.scored
    assert len(list(output.glob("*.parquet"))) >= 2  # rows_per_file: files as the run goes


def test_perceptclip_predict_engine_ray_resumes_retries_errors_and_refuses_what_it_must(
    ray_cluster, inputs, quality_dir, tmp_path
):
    folder, output = inputs["folder"], tmp_path / "new" / "scores"
    common = ["--model", quality_dir, "--engine", "ray", "--output", f"{output}/", "--tta", "3", "--batch-size", "4"]
    result = perceptclip("predict", folder, *common, cwd=tmp_path)  # (a folder to make, named as the README does)
    assert result.returncode == 0, result.stderr
    assert f"summary: {IMAGES} scored, 1 failed, 0 skipped" in result.stderr + result.stdout
    assert f"error: {folder / 'broken.jpg'}: cannot decode image" in result.stderr  # said as the local engine does
    expected = local_rows([str(folder)], str(quality_dir), **SETTINGS)
    assert_same_rows(folder_rows(output), expected)
    assert "broken.jpg" in next(row["error"] for row in folder_rows(output) if row["error"])

    again = perceptclip("predict", folder, *common, cwd=tmp_path)
    assert_clean_failure(again, "is not empty", "--resume")
    resumed = perceptclip("predict", folder, *common, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"0 scored, 0 failed, {IMAGES + 1} skipped" in resumed.stderr + resumed.stdout
    retried = perceptclip("predict", folder, *common, "--resume", "--retry-errors", cwd=tmp_path)
    assert f"0 scored, 1 failed, {IMAGES} skipped" in retried.stderr + retried.stdout
    assert_same_rows(folder_rows(output), expected)  # the error row replaced, not repeated

    other = perceptclip("predict", folder, *common[:-4], "--tta", "5", "--batch-size", "4", "--resume", cwd=tmp_path)
    assert_clean_failure(other, "another model or settings", "crops")
    workers = perceptclip("predict", folder, *common, "--num-workers", "2", "--overwrite", cwd=tmp_path)
    assert_clean_failure(workers, "--num-workers is the local engine's")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    refused = perceptclip("predict", folder, *common[:-6], "--output", foreign, "--overwrite", cwd=tmp_path)
    assert_clean_failure(refused, "not written by perceptclip predict --engine ray", "left untouched")
    assert (foreign / "notes.txt").read_text() == "mine"


def test_the_predictor_in_a_users_map_batches_over_read_binary_files(ray_cluster, inputs, quality_dir, emotion_dir):
    from perceptclip_hf.integrations.ray import PerceptCLIPPredictor

    models = {"quality": str(quality_dir), "emotion": str(emotion_dir)}
    images = ray.data.read_binary_files(str(inputs["folder"]), include_paths=True)
    scores = images.map_batches(
        PerceptCLIPPredictor,
        fn_constructor_kwargs={"models": models, **SETTINGS},
        batch_size=4,
        compute=ray.data.ActorPoolStrategy(size=1),
        num_cpus=1,
    )
    rows = scores.take_all()
    assert_same_rows(rows, local_rows([str(inputs["folder"])], models, **SETTINGS))


def wait_for(condition, seconds: float = 120):
    """``condition()``'s first true value, asked every 10 ms (fails after ``seconds``)."""
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        assert time.monotonic() < deadline, f"waited {seconds} s for {condition}"
        time.sleep(0.01)
    return value


def actor_processes() -> list[int]:
    listing = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in listing.splitlines() if "PerceptCLIPPredictor" in line]


def test_a_model_actor_killed_mid_run_loses_and_repeats_no_row(ray_cluster, inputs, quality_dir, tmp_path):
    from perceptclip_hf.integrations.ray import score_with_ray

    output, outcome = tmp_path / "scores", {}
    run = threading.Thread(
        target=lambda: outcome.update(
            summary=score_with_ray(
                str(inputs["many"]), str(quality_dir), output, rows_per_file=4, progress=False, **SETTINGS
            )
        )
    )
    run.start()
    first = wait_for(actor_processes)  # killed as it starts: before any row is written
    for pid in first:
        os.kill(pid, signal.SIGKILL)
    assert not folder_rows_readable(output)
    wait_for(lambda: any(output.glob("*.parquet")))  # and the restarted one, as it writes
    again = [pid for pid in actor_processes() if pid not in first]
    for pid in again:
        os.kill(pid, signal.SIGKILL)
    run.join(timeout=120)
    assert (outcome["summary"].scored, outcome["summary"].failed) == (MANY, 0)
    assert_same_rows(folder_rows(output), local_rows([str(inputs["many"])], str(quality_dir), **SETTINGS))


def test_a_killed_driver_then_resume_gives_the_uninterrupted_rows(ray_cluster, inputs, quality_dir, tmp_path):
    folder, output = inputs["many"], tmp_path / "scores"
    common = ["--model", quality_dir, "--engine", "ray", "--output", output, "--tta", "3", "--batch-size", "4"]
    driver = subprocess.Popen(
        [*perceptclip_command(), "predict", folder, *common, "--ray-address", ray_cluster, "--rows-per-file", "4"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TQDM_DISABLE": "1"},
    )
    deadline = time.monotonic() + 120
    while not any(output.glob("*.parquet")) and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.005)
    driver.send_signal(signal.SIGKILL)
    assert driver.wait() == -signal.SIGKILL
    before = len(folder_rows_readable(output))
    assert 0 < before < MANY, f"the driver was killed with {before} rows written"
    resumed = perceptclip("predict", folder, *common, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_rows(folder_rows(output), local_rows([str(folder)], str(quality_dir), **SETTINGS))


def folder_rows_readable(folder: Path) -> list[dict]:
    """The rows of the files a killed run finished (one it had not finished cannot be read)."""
    rows = []
    for path in folder.glob("*.parquet"):
        try:
            rows += pq.read_table(path).to_pylist()
        except Exception:
            pass
    return rows


def test_without_ray_the_engine_is_one_line_naming_the_extra(tmp_path, monkeypatch, inputs, quality_dir):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as where it is not installed
    result = perceptclip(
        "predict", inputs["folder"], "--model", quality_dir, "--engine", "ray", "--output", tmp_path / "o", cwd=tmp_path
    )
    assert_clean_failure(result, "pip install 'perceptclip-hf[ray]'")
    assert not (tmp_path / "o").exists()


def test_an_output_named_as_a_file_and_an_unreachable_cluster_are_one_line(tmp_path, inputs, quality_dir):
    from perceptclip_hf.errors import ConfigurationError
    from perceptclip_hf.integrations.ray.job import check_reachable

    result = perceptclip(
        "predict", inputs["folder"], "--model", quality_dir, "--engine", "ray", "--output", "x.csv", cwd=tmp_path
    )
    assert_clean_failure(result, "--output x.csv", "a folder of Parquet files", "name a folder")
    port = free_port()  # nothing listens there
    with pytest.raises(ConfigurationError, match=f"--ray-address 127.0.0.1:{port}: no Ray cluster answers there"):
        check_reachable(f"127.0.0.1:{port}")
