"""Scoring in two processes with `accelerate launch` on CPU (gloo), as a user runs it: over 200 AGIQA-3K images, as a
folder and as 4 WebDataset shards, the merged output holds exactly the single-process rows (none missing, none
twice, in the same order); a second launch on a running one is refused by each of its processes; killed with SIGKILL
midway and resumed, the same rows again."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from tests.helpers.cli import perceptclip, read_rows, two_cpu_processes
from tests.helpers.datasets import add_member
from tests.helpers.paths import AGIQA_DIR

COUNT, SHARDS = 200, 4


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("two_processes")
    sources = sorted((AGIQA_DIR / "images").glob("*.jpg"))[:COUNT]
    assert len(sources) == COUNT, f"the AGIQA-3K images are missing under {AGIQA_DIR}"
    (root / "folder").mkdir()
    (root / "shards").mkdir()
    for source in sources:
        shutil.copy(source, root / "folder" / source.name)
    per_shard = COUNT // SHARDS
    for shard in range(SHARDS):
        with tarfile.open(root / "shards" / f"{shard:06d}.tar", "w") as tar:
            for source in sources[shard * per_shard : (shard + 1) * per_shard]:
                add_member(tar, f"{source.stem}.jpg", source.read_bytes())
    return {"root": root, "folder": str(root / "folder"), "shards": str(root / "shards" / "{000000..000003}.tar")}


def launch(*arguments, cwd: Path, **popen) -> subprocess.Popen:
    environment = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    launcher = ["-m", "accelerate.commands.launch", *two_cpu_processes(), "-m", "perceptclip_hf.cli", "predict"]
    return subprocess.Popen(
        [sys.executable, *launcher, *map(str, arguments)],
        cwd=cwd,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (torchrun starts its workers in sessions of their own), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def assert_same_rows(rows: list[dict], expected: list[dict]) -> None:
    assert [row["id"] for row in rows] == [row["id"] for row in expected]
    assert max(abs(float(row["score"]) - float(reference["score"])) for row, reference in zip(rows, expected)) < 1e-5


@pytest.mark.parametrize("kind", ["folder", "shards"])
def test_two_processes_give_the_single_process_rows(inputs, quality_dir, kind, tmp_path):
    arguments = [inputs[kind], "--model", quality_dir, "--tta", "2", "--batch-size", "8", "--num-workers", "1"]
    single = tmp_path / "single.csv"
    result = perceptclip("predict", *arguments, "--output", single, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    output = tmp_path / "two.csv"
    process = launch(*arguments, "--output", output, cwd=tmp_path)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    assert f"summary: {COUNT} scored, 0 failed, 0 skipped in 2 processes" in stderr
    assert not Path(f"{output}.parts").exists()  # merged and removed
    assert_same_rows(read_rows(output), read_rows(single))


def test_killed_two_process_run_resumes_to_the_same_rows(inputs, quality_dir, tmp_path):
    arguments = [inputs["shards"], "--model", quality_dir, "--tta", "15", "--batch-size", "1", "--num-workers", "0"]
    single = tmp_path / "single.jsonl"
    assert perceptclip("predict", *arguments, "--output", single, cwd=tmp_path).returncode == 0
    output = tmp_path / "two.jsonl"
    parts = Path(f"{output}.parts")
    process = launch(*arguments, "--output", output, cwd=tmp_path)
    deadline = time.monotonic() + 300
    while sum(len(path.read_bytes().splitlines()) for path in parts.glob("part-*.jsonl")) < 20:
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.02)
    processes = [process.pid, *descendants(process.pid)]
    for pid in processes:  # frozen: a second launch meets it running
        os.kill(pid, signal.SIGSTOP)
    written = {path: path.read_bytes() for path in parts.iterdir()}
    second = launch(*arguments, "--output", output, "--resume", cwd=tmp_path)
    _, stderr = second.communicate(timeout=600)
    assert second.returncode != 0
    # The first of its processes to meet a lock (the output's, or its part's) is refused; the launcher then stops the
    # other, which may not get as far as its own refusal.
    refused = [line for line in stderr.splitlines() if "is being written by another run" in line]
    assert refused and all(f"--output {output}" in line for line in refused), stderr[-3000:]
    assert {path: path.read_bytes() for path in parts.iterdir()} == written
    for pid in processes:  # as a scheduler ends a job: every process at once
        os.kill(pid, signal.SIGKILL)
    process.communicate(timeout=60)
    written = sum(len(path.read_bytes().splitlines()) for path in parts.glob("part-*.jsonl"))
    assert 20 <= written < COUNT and not output.read_bytes()  # killed midway: rows only in the parts

    resumed = launch(*arguments, "--output", output, "--resume", cwd=tmp_path)
    _, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr[-3000:]
    scored = int(stderr.split("summary: ")[1].split(" scored")[0])
    assert scored + written >= COUNT and f"{COUNT - scored} skipped" in stderr
    assert_same_rows(read_rows(output), read_rows(single))
