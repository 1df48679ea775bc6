"""train.py on your own data (a CSV table of AGIQA-3K images, an image-folder fixture) and what a run shows: the
start summary and history in `train.log`, no spurious warnings, a grouped `--help`."""

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from perceptclip_hf.cli.train import main as train_main
from perceptclip_hf.data import benchmark_splits
from perceptclip_hf.training.recipe import parse_args
from tests.helpers.cli import assert_report_folder
from tests.helpers.datasets import write_csv, write_image
from tests.helpers.paths import AGIQA_DIR, QUICKSTART, REPO_ROOT

SHORT = ["--num_train_epochs", "2", "--test_crops", "3", "--eval_crops", "2", "--disable_tqdm", "true"]
CLASSES = ("blue", "green", "red")  # sorted: the folder order is the class order


def train(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "train.py"), "--config", str(QUICKSTART), *arguments],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=600,
    )


@pytest.fixture(scope="module")
def agiqa_table(tmp_path_factory) -> Path:
    """A user's CSV of 150 AGIQA-3K images (the first 15 prompts) with their own column names."""
    if not AGIQA_DIR.is_dir():
        pytest.skip(f"real AGIQA-3K data not found at {AGIQA_DIR}")
    with open(AGIQA_DIR / "data.csv", newline="") as source:
        rows = list(csv.DictReader(source))[:150]
    path = tmp_path_factory.mktemp("own_table") / "labels.csv"
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["file", "mos", "prompt"])
        writer.writerows([row["name"], row["mos_quality"], row["prompt"]] for row in rows)
    return path


def table_options(table: Path) -> list[str]:
    return [
        "--dataset",
        "table",
        "--data_dir",
        str(AGIQA_DIR / "images"),
        "--table",
        str(table),
        "--image_column",
        "file",
        "--label_column",
        "mos",
        "--group_column",
        "prompt",
        "--resize_short",
        "64",
    ]


def logged_sizes(log: str, dataset: str) -> dict[str, int]:
    line = re.search(rf"data: {dataset} split 0 \(\w+ protocol\): (.*) images", log).group(1)
    return {part: int(n) for part, n in (item.split() for item in line.split(", "))}


def test_train_py_on_a_csv_table_of_agiqa3k_images(agiqa_table, tmp_path):
    run_dir = tmp_path / "run"
    result = train(*table_options(agiqa_table), "--output_dir", str(run_dir), *SHORT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "did not find eval_srcc" not in result.stderr + result.stdout  # the test evaluations warned twice
    log = (run_dir / "train.log").read_text()

    # The split is content-disjoint by the user's group column, and the log reports its sizes.
    _, data_args, _, _ = parse_args(["--config", str(QUICKSTART), *table_options(agiqa_table)])
    info = data_args.dataset_info("table")
    splits = benchmark_splits(info, info.loader(data_args.data_dir[0]), 0)
    prompts = {part: set(ds["group"]) for part, ds in splits.items()}
    assert not prompts["train"] & prompts["test"] and not prompts["validation"] & prompts["test"]
    assert logged_sizes(log, "table") == {part: len(ds) for part, ds in splits.items()}
    assert sum(logged_sizes(log, "table").values()) == 150

    # Start summary (model, trainable parameters, device, folder) and the Trainer's per-epoch validation metrics.
    assert f"run: {run_dir / 'split_0' / 'lr_0.001'}" in log
    parameters = re.search(
        r"model: resnet backbone \(randomly initialised\), adaptation full, .*; ([\d,]+) trainable "
        r"of ([\d,]+) parameters",
        log,
    )
    assert parameters and parameters.group(1) == parameters.group(2)
    assert "device: cpu (torch.float32), 1 process(es), batch 32 per device, 2 epochs" in log
    epochs = [
        json.loads(line.split(": ", 2)[2])
        for line in log.splitlines()
        if "history: step" in line and "eval_srcc" in line
    ]
    assert [round(entry["epoch"]) for entry in epochs] == [1, 2]

    # The model's score range is the table's label range; results name the dataset.
    results = json.loads((run_dir / "results.json").read_text())
    assert results["dataset"] == "table" and results["task"] == "quality"
    config = json.loads((run_dir / "split_0" / "model" / "config.json").read_text())
    with open(agiqa_table, newline="") as source:
        labels = [float(row["mos"]) for row in csv.DictReader(source)]
    assert config["score_range"] == pytest.approx([min(labels), max(labels)])

    # The run folder holds its reports: the summary (curves, sweep, per-split table) and split 0's test report.
    assert assert_report_folder(run_dir / "report") == {"training_curves.png"}
    assert {"scatter.png", "over_rated.png"} <= assert_report_folder(run_dir / "split_0" / "report")
    assert f"{len(splits['test'])} images" in (run_dir / "split_0" / "report" / "report.md").read_text()


def make_imagefolder(root: Path, per_class: int = 16) -> Path:
    """Three classes of 40x40 images: noise tinted blue, green or red."""
    rng = np.random.default_rng(0)
    for channel, name in enumerate(("blue", "green", "red")[::-1]):  # red = channel 0
        (root / name).mkdir(parents=True)
        for index in range(per_class):
            pixels = rng.integers(0, 120, (40, 40, 3), dtype=np.uint8)
            pixels[..., channel] += 120
            Image.fromarray(pixels).save(root / name / f"{index:02d}.png")
    return root


def test_train_py_on_an_image_folder(tmp_path):
    folder = make_imagefolder(tmp_path / "photos")
    run_dir = tmp_path / "run"
    result = train(
        "--dataset",
        "imagefolder",
        "--data_dir",
        str(folder),
        "--output_dir",
        str(run_dir),
        "--per_device_train_batch_size",
        "8",
        "--loss",
        "cross_entropy",
        *SHORT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "did not find eval_accuracy" not in result.stderr + result.stdout
    sizes = logged_sizes((run_dir / "train.log").read_text(), "imagefolder")
    assert sum(sizes.values()) == 48 and sizes["test"] == round(0.2 * 48)  # LoDa's random 80/20 (by rows)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["task"] == "emotion" and 0.0 <= results["aggregate"]["accuracy"] <= 1.0
    config = json.loads((run_dir / "split_0" / "model" / "config.json").read_text())
    assert [config["id2label"][str(i)] for i in range(3)] == list(CLASSES)
    assert re.search(r"predicted (blue|green|red)", result.stdout)


@pytest.mark.parametrize(
    "arguments, expected",
    [
        (["--dataset", "table", "--data_dir", "."], "--dataset table: give --table FILE"),
        (["--table", "labels.csv"], "--table: read with --dataset table only"),
        (["--dataset", "imagefolder", "--data_dir", ".", "--task", "quality"], "its labels are classes"),
    ],
)
def test_own_data_option_mistakes_are_one_line(arguments, expected, capsys):
    assert train_main(["--config", str(QUICKSTART), *arguments]) == 2  # train.py's main, in this process
    stderr = capsys.readouterr().err
    assert expected in stderr and len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr


@pytest.mark.parametrize(
    "group_options, problem",
    [
        ([], "2 images: too few for a train/test split, which needs at least 3 images; add images"),
        (
            ["--group_column", "scene"],
            "2 images in 2 groups: too few for a train/test split by group, which needs at least 3 groups; "
            "add images of other groups",
        ),
    ],
)
def test_a_table_too_small_to_split_is_one_line(group_options, problem, tmp_path, capsys):
    rows = [[write_image(tmp_path / name).name, score, name[0]] for name, score in (("a.png", 2.0), ("b.png", 3.0))]
    write_csv(tmp_path / "labels.csv", ["path", "score", "scene"], rows)
    options = ["--dataset", "table", "--data_dir", str(tmp_path), "--table", "labels.csv", "--label_column", "score"]
    run = ["--output_dir", str(tmp_path / "run")]
    assert train_main(["--config", str(QUICKSTART), *options, *group_options, *run]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line or "Traceback" in line]
    assert errors == [f"train.py: error: table in {tmp_path}: {problem}"] and not (tmp_path / "run").exists()


def test_a_table_without_the_named_column_names_its_columns(agiqa_table, tmp_path):
    options = table_options(agiqa_table)
    options[options.index("mos")] = "quality"
    result = train(*options, "--output_dir", str(tmp_path / "run"))
    assert result.returncode == 2 and "missing column(s) ['quality']" in result.stderr
    assert "['file', 'mos', 'prompt']" in result.stderr and not (tmp_path / "run").exists()


def test_help_lists_the_essentials_first_and_the_trainer_options_on_request(capsys):
    short = subprocess.run(
        [sys.executable, str(REPO_ROOT / "train.py"), "--help"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert short.returncode == 0
    with pytest.raises(SystemExit) as exit_status:
        train_main(["--help-all"])
    every = capsys.readouterr().out
    assert exit_status.value.code == 0
    groups = re.findall(r"^(\w[^:\n]*):$", short.stdout, flags=re.M)
    assert groups == ["options", "Essentials", "Model", "Data", "Experiment"]
    essentials = short.stdout.split("Essentials:")[1].split("Model:")[0]
    assert essentials.index("--config") < essentials.index("--dataset") < essentials.index("--output_dir")
    assert "--eval_strategy" not in short.stdout and len(short.stdout.splitlines()) < 150
    assert "--eval_strategy" in every and "Trainer options (transformers.TrainingArguments):" in every
