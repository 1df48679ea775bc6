"""Outputs that two runs cannot corrupt, any file name, a full disk, SIGTERM, and odd inputs (issue "Reliability,
third round"). The concurrency tests run both commands as real processes: the first is frozen (SIGSTOP) once it
writes, so the second always meets it running, whatever the machine's speed."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from perceptclip_hf.errors import OutputError
from perceptclip_hf.output_lock import RUN_FOLDER_LOCK, OutputLock, lock_path
from perceptclip_hf.scoring import PerceptScorer, id_name, score
from perceptclip_hf.scoring.score_files import read_record
from tests.helpers.cli import (
    assert_clean_failure,
    perceptclip,
    perceptclip_command,
    read_rows,
    tiny_recipe,
    train_command,
)
from tests.helpers.models import random_image

COUNT = 400  # enough images that a run is still writing when it is frozen


@pytest.fixture(scope="module")
def many_images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("many")
    for index in range(COUNT):
        random_image(index, size=(24, 20)).save(folder / f"img{index:04d}.png")
    return folder


def start_predict(*arguments, cwd: Path) -> subprocess.Popen:
    """`perceptclip predict ARGS` as a process of its own."""
    return subprocess.Popen(
        [*perceptclip_command(), "predict", *map(str, arguments)],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TQDM_DISABLE": "1"},
    )


def wait_for(condition, process: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the first run ended before {what}: {process.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.005)


def lines_in(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def scores(path: Path) -> dict[str, float]:
    """``{id: score}`` of a score file; fails on an id written twice."""
    rows = read_rows(path)
    ids = [row["id"] for row in rows]
    assert len(ids) == len(set(ids)), "an id written twice"
    return {row["id"]: float(row["score"]) for row in rows}


def assert_same_scores(found: dict[str, float], expected: dict[str, float]) -> None:
    assert sorted(found) == sorted(expected)
    assert max(abs(found[id_] - expected[id_]) for id_ in expected) < 1e-6


# ----------------------------------------------------------------------------------------------- one writer per output
def test_a_second_predict_on_a_running_output_is_refused_and_a_killed_runs_lock_is_taken_over(
    many_images, quality_dir, tmp_path
):
    """A `--resume` started while the first run writes (a cron retry, a second terminal) is refused with one line
    naming the first (pid, host, start, command) and leaves the file as it was; once the first is killed (SIGKILL,
    its lock file left behind), `--resume` takes the lock over, says so, and completes to the uninterrupted rows."""
    arguments = [many_images, "--model", quality_dir, "--batch-size", "2", "--tta", "2"]
    expected = tmp_path / "expected.csv"
    assert perceptclip("predict", *arguments, "--output", expected, cwd=tmp_path).returncode == 0
    output = tmp_path / "scores.csv"
    first = start_predict(*arguments, "--output", output, cwd=tmp_path)
    try:
        wait_for(lambda: lines_in(output) >= 3, first, "rows")
        first.send_signal(signal.SIGSTOP)
        written = output.read_bytes()
        second = subprocess.run(
            [*perceptclip_command(), "predict", *map(str, arguments), "--output", str(output), "--resume"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        line = assert_clean_failure(second, f"--output {output} is being written by another run", f"pid {first.pid}")
        assert "started " in line and "--resume then continues" in line
        assert output.read_bytes() == written
    finally:
        first.kill()
        first.communicate(timeout=60)
    assert json.loads(lock_path(output).read_text())["pid"] == first.pid  # left by the killed run

    resumed = perceptclip("predict", *arguments, "--output", output, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"taking over the lock of a run that ended without releasing it (pid {first.pid}" in resumed.stderr
    assert_same_scores(scores(output), scores(expected))
    assert not lock_path(output).exists()


def test_a_second_training_run_into_a_running_output_dir_is_refused(synthetic_dir, tmp_path):
    """Two `train.py` runs into one `--output_dir`: the second is refused with one line naming the first; the lock of
    the first, once killed, is free to take (and names it)."""
    recipe = tiny_recipe(tmp_path, synthetic_dir)
    run_dir = tmp_path / "run"
    lock = run_dir / RUN_FOLDER_LOCK
    first = subprocess.Popen(
        train_command(recipe, "--output_dir", str(run_dir)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: lock.exists() and lock.stat().st_size > 0, first, "its lock")
        first.send_signal(signal.SIGSTOP)
        second = subprocess.run(
            train_command(recipe, "--output_dir", str(run_dir)), capture_output=True, text=True, timeout=300
        )
        assert_clean_failure(second, f"--output_dir {run_dir} is being written by another run", f"pid {first.pid}")
    finally:
        first.kill()
        first.communicate(timeout=60)
    with OutputLock(lock, "--output_dir") as taken:
        assert taken.stale["pid"] == first.pid
    assert not lock.exists()


# ----------------------------------------------------------------------------------------------------- any file name
@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_latin1_file_names_are_scored_once_and_recoverable_from_their_ids(suffix, quality_dir, tmp_path):
    """Names that are not UTF-8 (Latin-1 from an old archive): scored, written losslessly (``\\xNN`` escapes), the
    name back from the id (``id_name``), recognised on `--resume`; an unreadable one is an error row like any other.
    A UTF-8 name that looks escaped, and one holding a carriage return, keep ids of their own."""
    folder = tmp_path / "photos"
    folder.mkdir()
    raw = os.fsencode(folder)

    def latin1(name: bytes) -> str:
        return os.fsdecode(raw + b"/" + name)

    random_image(1, size=(40, 36)).save(latin1(b"caf\xe9.png"))
    random_image(2, size=(40, 36)).save(folder / "plain.png")
    random_image(3, size=(40, 36)).save(latin1(b"a\\b\xfc.png"))  # a backslash too: escaped as \x5c
    random_image(5, size=(40, 36)).save(latin1(b"caf\\xe9.png"))  # UTF-8, but looks escaped: escaped too
    random_image(6, size=(40, 36)).save(latin1(b"cr\rret.png"))  # a carriage return: a quoted CSV field
    output = tmp_path / f"scores{suffix}"
    options = dict(tta=2, batch_size=2, num_workers=0)
    first = score([str(folder)], quality_dir, output, **options)
    assert (first.scored, first.failed) == (5, 0)
    random_image(4, size=(40, 36)).save(latin1(b"\xc0_new.png"))
    Path(latin1(b"\xe9chec.jpg")).write_bytes(b"\xff\xd8 not a jpeg")
    resumed = score([str(folder)], quality_dir, output, resume=True, **options)
    assert (resumed.scored, resumed.failed, resumed.skipped) == (1, 1, 5)

    rows = read_rows(output)
    ids = [row["id"] for row in rows]
    assert len(ids) == len(set(ids)) == 7
    files = {os.fsencode(os.path.join(folder, name)) for name in os.listdir(folder)}
    assert {os.fsencode(id_name(id_)) for id_ in ids} == files
    assert {raw + b"/caf\\xe9.png", raw + b"/caf\\x5cxe9.png"} <= {id_.encode() for id_ in ids}  # the README's form
    scorer = PerceptScorer.from_pretrained(str(quality_dir), tta=2, num_workers=0)
    for row in rows:
        if row.get("error"):
            assert id_name(row["id"]).endswith("chec.jpg") and row["id"] in row["error"]
        else:
            assert abs(float(row["score"]) - scorer(id_name(row["id"]))["score"]) < 1e-6


# --------------------------------------------------------------------------------------------------------- full disk
@pytest.fixture
def small_disk(tmp_path):
    """A 512 KiB tmpfs (root only: CI runs as root), unmounted after the test."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_full_disk_is_one_line_and_resume_after_freeing_space_completes(
    suffix, small_disk, many_images, quality_dir, tmp_path
):
    """The disk fills up mid-run: one line naming the file, the free space and --resume, exit status 2; the rows
    written are intact (each as the uninterrupted run scored it); --resume after freeing space completes to the
    uninterrupted rows."""
    arguments = [many_images, "--model", quality_dir, "--batch-size", "8", "--tta", "2"]
    expected = tmp_path / f"expected{suffix}"
    assert perceptclip("predict", *arguments, "--output", expected, cwd=tmp_path).returncode == 0
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * 484 * 1024)  # 28 KiB left
    output = small_disk / f"scores{suffix}"
    failed = perceptclip("predict", *arguments, "--output", output, cwd=tmp_path)
    assert_clean_failure(failed, f"--output {output}: the disk is full (", f"free in {small_disk}", "--resume")
    data = (Path(f"{output}.pending.jsonl") if suffix == ".parquet" else output).read_bytes()
    lines = data[: data.rfind(b"\n") + 1].decode().splitlines()  # whole lines (a resume cuts a partial last one)
    kept = list(csv.DictReader(lines)) if suffix == ".csv" else [json.loads(line) for line in lines]
    assert 8 <= len(kept) < COUNT
    reference = scores(expected)
    assert all(abs(float(row["score"]) - reference[row["id"]]) < 1e-6 for row in kept)
    assert not list(small_disk.glob("*.tmp"))

    filler.unlink()
    resumed = perceptclip("predict", *arguments, "--output", output, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_scores(scores(output), reference)


# ---------------------------------------------------------------------------------------------------------- signals
def test_sigterm_ends_a_run_as_ctrl_c_does(many_images, quality_dir, tmp_path):
    """`kill PID` (SIGTERM) mid-run with Parquet output and input workers: one line, exit status 143, no traceback of
    the command or its workers; --resume completes to the uninterrupted rows."""
    arguments = [many_images, "--model", quality_dir, "--batch-size", "2", "--tta", "2", "--num-workers", "2"]
    expected = tmp_path / "expected.parquet"
    assert perceptclip("predict", *arguments, "--output", expected, cwd=tmp_path).returncode == 0
    output = tmp_path / "scores.parquet"
    run = start_predict(*arguments, "--output", output, cwd=tmp_path)
    wait_for(lambda: lines_in(Path(f"{output}.pending.jsonl")) >= 4, run, "rows")
    run.send_signal(signal.SIGTERM)
    _, stderr = run.communicate(timeout=120)  # (the workers' stderr too: the pipe closes when they are gone)
    assert run.returncode == 143, stderr[-2000:]
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1] == "perceptclip predict: terminated"
    resumed = perceptclip("predict", *arguments, "--output", output, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_scores(scores(output), scores(expected))


# ------------------------------------------------------------------------------------------------ what is written when
@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_rows_reach_the_disk_a_batch_at_a_time(suffix, quality_dir, tmp_path):
    """When the 7th image fails, the first 3 batches of 2 are already on disk (flushed per batch), so a kill loses
    at most the batch in flight."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(6):
        random_image(index, size=(40, 36)).save(folder / f"img{index}.png")
    (folder / "img6.png").write_bytes(b"\x89PNG not really")
    output = tmp_path / f"scores{suffix}"
    rows_file = Path(f"{output}.pending.jsonl") if suffix == ".parquet" else output
    on_disk = []

    def report(message: str) -> None:
        if message.startswith("error:"):
            on_disk.append(lines_in(rows_file) - (suffix == ".csv"))  # (a CSV's header)

    summary = score([str(folder)], quality_dir, output, tta=2, batch_size=2, num_workers=0, report=report)
    assert (summary.scored, summary.failed) == (6, 1)
    assert on_disk == [6]


def test_the_record_says_how_images_were_decoded(quality_dir, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    random_image(0, size=(64, 48)).save(folder / "a.jpg")
    for fast, decode in ((False, "full"), (True, "reduced (JPEG draft, --fast-decode)")):
        output = tmp_path / f"fast{fast}.csv"
        score([str(folder)], quality_dir, output, tta=2, num_workers=0, fast_decode=fast)
        assert read_record(output)["runs"][-1]["decode"] == decode


# ------------------------------------------------------------------------------------------------------- odd inputs
def test_symlink_loops_and_repeated_arguments_are_named_as_such(quality_dir, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    random_image(0, size=(40, 36)).save(folder / "a.png")
    (folder / "one").symlink_to("two")
    (folder / "two").symlink_to("one")
    (folder / "gone").symlink_to(tmp_path / "missing")
    result = perceptclip("predict", folder, "--model", quality_dir, "--tta", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"not scored: {folder / 'one'}: symlink loop (the link leads back to itself)" in result.stderr
    assert f"not scored: {folder / 'gone'}: broken symlink" in result.stderr
    twice = perceptclip("predict", folder, folder / "a.png", "--model", quality_dir, "--tta", "2", cwd=tmp_path)
    assert f"not scored: {folder / 'a.png'}: named more than once (scored once)" in twice.stderr
    named = perceptclip("predict", folder / "one", "--model", quality_dir, cwd=tmp_path)
    assert_clean_failure(named, f"{folder / 'one'}: symlink loop (the link leads back to itself); fix the link")


def test_integer_pixels_of_any_dtype_are_read_by_their_range(quality_dir):
    """numpy and torch integer arrays of any dtype holding 0..255 are the uint8 image (torch: also channels first);
    out of range is refused naming the range; predict_logits normalises integer pixels once, whatever their dtype."""
    scorer = PerceptScorer.from_pretrained(str(quality_dir), tta=2, num_workers=0)
    pixels = np.random.default_rng(0).integers(0, 256, (40, 36, 3))
    expected = scorer(pixels.astype(np.uint8))["score"]
    tensor = torch.from_numpy(pixels)
    for image in (pixels, pixels.astype(np.int32), pixels.astype(np.int16), tensor, tensor.permute(2, 0, 1)):
        assert abs(scorer(image)["score"] - expected) < 1e-6, image.dtype
    out_of_range = pixels.copy()
    out_of_range[0, 0, :2] = -1, 255
    with pytest.raises(ValueError, match=r"int64 array with values -1\.\.255"):
        scorer(out_of_range)
    crops = (scorer.preprocess(pixels.astype(np.uint8)) * 0 + 7).to(torch.int64)  # integer pixels, the crops' shape
    assert torch.allclose(scorer.predict_logits(crops), scorer.predict_logits(crops.to(torch.uint8)))
    with pytest.raises(ValueError, match=r"torch.int64 pixels with values 7\.\.300"):
        scorer.predict_logits(torch.cat([crops, crops * 0 + 300]))


def test_one_process_cannot_take_its_own_output_twice(tmp_path):
    """An OS lock does not stand between two users in one process (two threads of the Python API): the second is
    refused all the same; once the first lets go, the lock file is gone and the next takes it with no stale note (and
    taking a lock it holds is nothing to do)."""
    path = lock_path(tmp_path / "scores.csv")
    with OutputLock(path, "--output scores.csv"):
        with pytest.raises(OutputError, match="scores.csv is being written by another run in this process"):
            OutputLock(path, "--output scores.csv").acquire()
    assert not path.exists()
    again = OutputLock(path, "--output scores.csv").acquire()
    with again:  # (entering a lock already taken: train.py takes it, then holds it in a with block)
        assert again.acquire() is again and again.taken_over() is None
    assert not path.exists()
