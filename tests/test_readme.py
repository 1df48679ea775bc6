"""The README's Python snippets run as written: every ```python block, in order, in a fresh process, in a folder
laid out as the README's commands leave it (the quickstart run in `outputs/`, photos, shards), with a Hugging Face
cache that holds the official releases and their base model in miniature, offline (`HF_HUB_OFFLINE=1`). The Ray
Data snippet starts its own Ray there (the Ray tests' group: one Ray on the 2 CPUs at a time)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
from io import BytesIO

import pyarrow.parquet as pq
import pytest

from tests.helpers.datasets import add_member
from tests.helpers.models import random_image
from tests.helpers.official import hub_cache_with_the_releases, write_release
from tests.helpers.paths import REPO_ROOT

PHOTOS, SHARDS = 3, 10


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", markdown, flags=re.M | re.S)


@pytest.mark.xdist_group("ray")
def test_the_readme_python_snippets_run_as_written(tmp_path, trained_run, synthetic_dir):
    blocks = python_blocks((REPO_ROOT / "README.md").read_text())
    assert len(blocks) >= 6 and any("score(" in block for block in blocks)
    release = tmp_path / "release"
    release.mkdir()
    write_release(release)
    cache = hub_cache_with_the_releases(release, tmp_path / "hub")
    work = tmp_path / "work"
    (work / "outputs").mkdir(parents=True)
    (work / "outputs" / "quickstart").symlink_to(trained_run / "run")
    (work / "outputs" / "synthetic_iqa").symlink_to(synthetic_dir)
    shutil.copytree(release / "clip", work / "clip-vit-large-patch14")  # the README's local copy of the base
    random_image(7, size=(80, 60)).save(work / "photo.jpg")
    (work / "photos").mkdir()
    for index in range(PHOTOS):
        random_image(index, size=(64, 48)).save(work / "photos" / f"photo{index}.png")
    (work / "shards").mkdir()
    for shard in range(SHARDS):
        with tarfile.open(work / "shards" / f"{shard:06d}.tar", "w") as tar:
            buffer = BytesIO()
            random_image(100 + shard, size=(56, 40)).save(buffer, format="PNG")
            add_member(tar, f"{shard:06d}.png", buffer.getvalue())
    program = "\n".join(
        f"print('--- block {index}', flush=True)\nexec(compile({block!r}, 'README block {index}', 'exec'), {{}})"
        for index, block in enumerate(blocks)
    )
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    result = subprocess.run(
        [sys.executable, "-c", program], cwd=work, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert f"summary: {PHOTOS + SHARDS} scored, 0 failed, 0 skipped" in result.stdout
    rows = pq.read_table(work / "scores.parquet").to_pylist()
    assert len(rows) == PHOTOS + SHARDS and {"quality_score", "emotion_label"} <= set(rows[0])
    assert (work / "my-iqa-model" / "config.json").is_file()
    ray_rows = pq.read_table(work / "ray_scores").to_pylist()  # the Ray Data snippet: the photos, scored
    assert sorted(os.path.basename(row["id"]) for row in ray_rows) == [f"photo{i}.png" for i in range(PHOTOS)]
    assert all(row["error"] is None and isinstance(row["score"], float) for row in ray_rows)
