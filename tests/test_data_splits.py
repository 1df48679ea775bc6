"""Split protocols: LoDa's seeded splits, reference/prompt-disjoint splits, official and user splits."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import Dataset

from perceptclip_hf.data import (
    DatasetFormatError,
    benchmark_splits,
    fraction_splits,
    group_split_names,
    grouped_splits,
    hold_out,
    lamem_splits,
    load_agiqa3k,
    load_emoset,
    load_emotionroi,
    load_koniq10k,
    load_lamem,
    loda_split_indices,
    loda_splits,
    splits_from_file,
)
from tests.helpers.cli import assert_clean_failure, perceptclip
from tests.helpers.datasets import make_emoset, make_emotionroi, make_koniq, make_lamem, write_csv, write_image
from tests.helpers.paths import AGIQA_DIR

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "n, first_test", [(10073, [1730, 6264, 7497, 3277, 6814]), (1162, [915, 502, 265, 1087, 1117])]
)
def test_loda_split0_first_test_indices(n, first_test):
    assert loda_split_indices(n, 0)[1][:5] == first_test


@pytest.mark.parametrize(
    "n, n_train, n_test", [(10073, 8058, 2015), (1162, 930, 232), (11125, 8900, 2225), (39810, 31848, 7962)]
)
def test_loda_split_sizes(n, n_train, n_test):
    for split in (0, 9):
        train, test = loda_split_indices(n, split)
        assert (len(train), len(test)) == (n_train, n_test)
        assert sorted(train + test) == list(range(n))
    assert loda_split_indices(n, 0) != loda_split_indices(n, 1)


def loda_reference(n: int, split: int) -> tuple[list[int], list[int]]:
    """LoDa's `get_random_splits` (scripts/process_koniq10k.py), re-typed: one `random.seed(3407)`, then `split + 1`
    successive shuffles of the same list; train = the first `int(round(0.8 * n))`."""
    state = random.getstate()
    try:
        random.seed(3407)
        index = list(range(n))
        for _ in range(split + 1):
            random.shuffle(index)
    finally:
        random.setstate(state)
    cut = int(round(0.8 * n))
    return index[:cut], index[cut:]


# Computed once with `loda_reference` in a scratch script (not with the package).
LODA_FIRST_TEN = {
    (100, 3): ([8, 41, 56, 32, 39, 42, 6, 82, 61, 4], [18, 81, 94, 24, 20, 5, 45, 35, 19, 16]),
    (100, 9): ([78, 90, 34, 42, 29, 25, 41, 87, 39, 63], [70, 73, 3, 61, 68, 53, 71, 97, 62, 86]),
}


@pytest.mark.parametrize("n, split", sorted(LODA_FIRST_TEN))
def test_loda_later_splits_continue_one_seeded_shuffle_sequence(n, split):
    """Split k is the (k+1)-th shuffle of one sequence seeded once, not a fresh shuffle seeded per split."""
    train, test = loda_split_indices(n, split)
    assert (train[:10], test[:10]) == LODA_FIRST_TEN[n, split]
    assert (len(train), len(test)) == (80, 20)


def test_loda_koniq_split9_first_test_indices():
    assert loda_split_indices(10073, 9)[1][:10] == [3392, 5898, 9451, 6557, 1821, 5238, 8750, 1896, 1658, 705]


@pytest.mark.parametrize("n", [100, 1162])
def test_loda_all_ten_splits_match_the_retyped_procedure(n):
    for split in range(10):
        assert loda_split_indices(n, split) == loda_reference(n, split), f"split {split}"


def test_loda_splits_on_a_dataset_use_sample_ids_and_hold_out_validation():
    ds = Dataset.from_dict({"sample_id": list(range(1162))})
    splits = loda_splits(ds, 0)
    assert splits["test"]["sample_id"][:5] == [915, 502, 265, 1087, 1117]
    assert (len(splits["train"]), len(splits["validation"]), len(splits["test"])) == (837, 93, 232)
    train, _ = loda_split_indices(1162, 0)
    assert splits["validation"]["sample_id"] == train[-93:]  # documented rule: last 10% of train
    assert set(loda_splits(ds, 0, validation_fraction=0)) == {"train", "test"}


def _reference_dataset(n_refs: int, per_ref: int, ext: str = "png") -> Dataset:
    return Dataset.from_dict({"reference": [f"I{r:02d}.{ext}" for r in range(1, n_refs + 1) for _ in range(per_ref)]})


@pytest.mark.parametrize(
    "name, n_refs, per_ref, n_train, n_test",
    [("kadid10k", 81, 125, 8125, 2000), ("tid2013", 25, 120, 2400, 600), ("live", 29, 27, 23 * 27, 6 * 27)],
)
def test_reference_splits_sizes_and_disjointness(name, n_refs, per_ref, n_train, n_test):
    ds = _reference_dataset(n_refs, per_ref)
    for split in range(10):
        out = benchmark_splits(name, ds, split, validation_fraction=0)
        assert (len(out["train"]), len(out["test"])) == (n_train, n_test)
        assert not set(out["train"]["reference"][:]) & set(out["test"]["reference"][:])
    with_val = benchmark_splits(name, ds, 0)
    refs = [set(with_val[s]["reference"][:]) for s in ("train", "validation", "test")]
    assert not (refs[0] & refs[1] or refs[0] & refs[2] or refs[1] & refs[2])
    assert sum(len(r) for r in refs) == n_refs


def test_reference_split_is_independent_of_row_order():
    refs = [f"I{r:02d}.png" for r in range(1, 82)]
    assert group_split_names(refs, 65) == group_split_names(list(reversed(refs)) * 2, 65)


@pytest.mark.parametrize(
    "name, column, too_few, enough, message",
    [
        (
            "agiqa3k",
            "group",
            ["cat", "dog"],
            ["cat", "dog", "owl"],
            "agiqa3k in /data/agiqa3k: 2 images in 2 groups: too few for a train/test split by group, which needs at "
            "least 3 groups; add images of other groups",
        ),
        (
            "live",
            "reference",
            [f"I{r}.bmp" for r in range(5) for _ in range(2)],
            [f"I{r}.bmp" for r in range(24)],
            "live in /data/live: 10 images in 5 groups: too few for a train/test split by group, which needs at "
            "least 24 groups; add images of other groups",
        ),
        (
            "koniq10k",
            "sample_id",
            [0, 1],
            [0, 1, 2],
            "koniq10k in /data/koniq10k: 2 images: too few for a train/test split, which needs at least 3 images; "
            "add images",
        ),
        (
            "emotionroi",
            "sample_id",
            [0, 1],
            [0, 1, 2],
            "emotionroi in /data/emotionroi: 2 images: too few for a train/test split, which needs at least 3 "
            "images; add images",
        ),
    ],
)
def test_a_dataset_too_small_for_its_split_names_it_the_counts_and_the_minimum(name, column, too_few, enough, message):
    """One line for the user (a DatasetFormatError: exit status 2, no traceback); with the minimum it splits."""
    with pytest.raises(DatasetFormatError) as error:
        benchmark_splits(name, Dataset.from_dict({column: too_few}), 0, data_dir=f"/data/{name}")
    assert str(error.value) == message
    parts = benchmark_splits(name, Dataset.from_dict({column: enough}), 0)
    assert len(parts["train"]) > 0 and len(parts["test"]) > 0


def test_evaluate_on_a_two_image_benchmark_is_one_line(quality_dir, tmp_path):
    rows = [[write_image(tmp_path / "agiqa" / "images" / f"{n}.png").name, n, 2.0 + i] for i, n in enumerate("ab")]
    write_csv(tmp_path / "agiqa" / "data.csv", ["name", "prompt", "mos_quality"], rows)
    result = perceptclip("evaluate", "-m", quality_dir, "-d", "agiqa3k", "--data-dir", "agiqa", cwd=tmp_path)
    line = assert_clean_failure(result)
    assert line == (
        "perceptclip evaluate: error: agiqa3k in agiqa: 2 images in 2 groups: too few for a train/test split by "
        "group, which needs at least 3 groups; add images of other groups"
    )


def test_hold_out_rounds_half_up_and_keeps_order():
    assert hold_out(list(range(65)), 0.1) == (list(range(58)), list(range(58, 65)))
    assert hold_out([1, 2, 3], 0) == ([1, 2, 3], [])


_SUBPROCESS_SNIPPET = """
import json, sys
from perceptclip_hf.data import group_split_names, loda_split_indices
print(json.dumps({"loda": loda_split_indices(1162, 3),
                  "refs": group_split_names([f"ref{i}" for i in range(40)] * 3, None, 2)}))
"""


def test_splits_identical_across_processes_with_other_hash_seed():
    env = dict(os.environ, PYTHONHASHSEED=str((int(os.environ.get("PYTHONHASHSEED", "0") or 0) + 1) % 4096 + 7))
    out = subprocess.run(
        [sys.executable, "-c", _SUBPROCESS_SNIPPET, str(REPO / "perceptclip_hf")],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    )
    other = json.loads(out.stdout.strip().splitlines()[-1])
    assert other["loda"] == [list(x) for x in loda_split_indices(1162, 3)]
    assert other["refs"] == [list(x) for x in group_split_names([f"ref{i}" for i in range(40)] * 3, None, 2)]


def test_koniq_benchmark_splits_from_fixture(tmp_path):
    make_koniq(tmp_path, n=20)
    ds = load_koniq10k(tmp_path)
    splits = benchmark_splits("koniq10k", ds, 0)
    train, test = loda_split_indices(20, 0)
    assert splits["test"]["sample_id"] == test
    assert sorted(splits["train"]["sample_id"][:] + splits["validation"]["sample_id"][:]) == sorted(train)


def test_lamem_official_splits(tmp_path):
    make_lamem(tmp_path)
    ds = load_lamem(tmp_path)
    for split in range(5):
        out = benchmark_splits("lamem", ds, split, data_dir=tmp_path)
        names = (tmp_path / "lamem" / "splits" / f"test_{split + 1}.txt").read_text().split()[::2]
        assert out["test"]["image_name"] == names
        assert (len(out["train"]), len(out["validation"]), len(out["test"])) == (6, 2, 2)
    assert lamem_splits(ds, tmp_path, 1)["train"]["image_name"] != lamem_splits(ds, tmp_path, 0)["train"]["image_name"]


def test_emoset_official_json_splits(tmp_path):
    entries = make_emoset(tmp_path)
    out = benchmark_splits("emoset", load_emoset(tmp_path), 0)
    assert {k: len(v) for k, v in out.items()} == {
        k: len(entries[p]) for k, p in (("train", "train"), ("validation", "val"), ("test", "test"))
    }
    assert out["test"]["image_id"] == [e[1] for e in entries["test"]]


def test_emotionroi_five_random_75_20_5_splits(tmp_path):
    make_emotionroi(tmp_path, per_class=20)  # 120 images
    ds = load_emotionroi(tmp_path)
    seen_tests = set()
    for split in range(5):
        out = benchmark_splits("emotionroi", ds, split)
        assert {k: len(v) for k, v in out.items()} == {"train": 90, "validation": 6, "test": 24}
        assert sorted(sum((out[k]["sample_id"][:] for k in out), [])) == list(range(120))
        seen_tests.add(tuple(out["test"]["sample_id"]))
    assert len(seen_tests) == 5
    assert fraction_splits(ds, 2)["test"]["sample_id"] == benchmark_splits("emotionroi", ds, 2)["test"]["sample_id"]


def test_user_split_file_by_names_and_by_rows(tmp_path):
    make_koniq(tmp_path, n=5)
    ds = load_koniq10k(tmp_path)
    (tmp_path / "names.json").write_text(
        json.dumps({"train": ["1000.jpg", "1001.jpg", "1002.jpg"], "val": ["1003.jpg"], "test": ["1004.jpg"]})
    )
    out = splits_from_file(ds, tmp_path / "names.json")
    assert out["validation"]["image_name"] == ["1003.jpg"] and len(out["train"]) == 3
    (tmp_path / "rows.json").write_text(json.dumps({"train": [4, 0], "test": [2]}))
    out = splits_from_file(ds, tmp_path / "rows.json")
    assert out["train"]["sample_id"] == [4, 0] and set(out) == {"train", "test"}


def test_agiqa3k_real_data_prompt_disjoint_splits():
    if not AGIQA_DIR.is_dir():
        pytest.skip(f"real AGIQA-3K data not found at {AGIQA_DIR}")
    ds = load_agiqa3k(AGIQA_DIR)
    assert len(ds) == 2982 and len(set(ds["group"][:])) == 300
    assert min(ds["label"]) >= 0.0 and max(ds["label"]) == pytest.approx(4.488741, abs=1e-5)
    for split in (0, 1):
        out = benchmark_splits("agiqa3k", ds, split)
        groups = {name: set(part["group"][:]) for name, part in out.items()}
        assert (len(groups["train"]), len(groups["validation"]), len(groups["test"])) == (216, 24, 60)
        assert not (
            groups["train"] & groups["test"]
            or groups["train"] & groups["validation"]
            or groups["validation"] & groups["test"]
        )
        assert sum(len(part) for part in out.values()) == 2982
    assert grouped_splits(ds, "group", 0)["test"]["group"] != grouped_splits(ds, "group", 1)["test"]["group"]
