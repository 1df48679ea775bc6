"""Protocol facts pinned to literal values taken from their sources, never to the list the code built them from:
the official emotion label order, and `predict --resume` skipping images by path (not by count)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from perceptclip_hf import PerceptCLIPConfig
from perceptclip_hf.cli import main
from perceptclip_hf.data import EMOSET_CLASSES, get_dataset_info, load_emoset
from perceptclip_hf.modeling import TASK_PRESETS
from perceptclip_hf.modeling.configuration_perceptclip import EMOTION_LABELS
from perceptclip_hf.tasks import get_task
from tests.helpers.datasets import make_emoset
from tests.helpers.models import OFFICIAL_EMOTIONS, random_image

# EmoSet `info.json` label2idx order = the order of the official PerceptCLIP_Emotions logits. Typed here.


def test_emotion_labels_are_emosets_label2idx_order_everywhere(tmp_path):
    assert tuple(EMOTION_LABELS) == OFFICIAL_EMOTIONS
    config = PerceptCLIPConfig(task="emotion")
    assert config.num_labels == 8
    assert {int(i): label for i, label in config.id2label.items()} == dict(enumerate(OFFICIAL_EMOTIONS))
    assert {label: int(i) for label, i in config.label2id.items()} == {
        label: i for i, label in enumerate(OFFICIAL_EMOTIONS)
    }
    assert tuple(TASK_PRESETS["emotion"]["labels"]) == OFFICIAL_EMOTIONS
    assert tuple(get_task("emotion").labels) == OFFICIAL_EMOTIONS
    assert tuple(EMOSET_CLASSES) == OFFICIAL_EMOTIONS
    assert tuple(get_dataset_info("emoset").class_names) == OFFICIAL_EMOTIONS
    assert tuple(get_dataset_info("emoset").positive_classes) == OFFICIAL_EMOTIONS[:4]

    # The loader reads the class order from info.json: an image of fear is class 6, of sadness class 7.
    make_emoset(tmp_path / "emoset")
    ds = load_emoset(tmp_path / "emoset").with_format(None)
    assert tuple(ds.features["label"].names) == OFFICIAL_EMOTIONS
    label_of = {image_id.split("_")[0]: label for image_id, label in zip(ds["image_id"], ds["label"])}
    assert label_of == {emotion: i for i, emotion in enumerate(OFFICIAL_EMOTIONS)}


def test_a_saved_emotion_model_writes_the_official_label_order(emotion_dir):
    """What the Hub sees: `config.json`'s id2label (its keys are strings there) and the scorer's labels."""
    from perceptclip_hf.scoring.scorer import PerceptScorer

    saved = json.loads((emotion_dir / "config.json").read_text())
    assert saved["id2label"] == {str(i): label for i, label in enumerate(OFFICIAL_EMOTIONS)}
    assert saved["label2id"] == {label: i for i, label in enumerate(OFFICIAL_EMOTIONS)}
    assert tuple(PerceptScorer.from_pretrained(emotion_dir).labels) == OFFICIAL_EMOTIONS


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_resume_skips_the_images_already_scored_by_path_not_by_count(quality_dir, tmp_path, capsys):
    """An earlier run of the same model scored images 2 and 4 of 5 (the folder held only those); the other three
    were added since. `--resume` must score exactly 1, 3 and 5: each image once, rows of 2 and 4 untouched."""
    folder = tmp_path / "photos"
    folder.mkdir()
    names = [f"im{i}.png" for i in range(1, 6)]
    for index in (2, 4):
        random_image(index).save(folder / names[index - 1])
    output = tmp_path / "scores.csv"
    assert main(["predict", str(folder), "--model", str(quality_dir), "--output", str(output)]) == 0
    first_lines = output.read_bytes().splitlines(keepends=True)
    assert [Path(row["id"]).name for row in read_csv_rows(output)] == ["im2.png", "im4.png"]
    capsys.readouterr()

    for index in (1, 3, 5):
        random_image(index).save(folder / names[index - 1])
    assert main(["predict", str(folder), "--model", str(quality_dir), "--output", str(output), "--resume"]) == 0
    assert "3 scored, 0 failed, 2 skipped" in capsys.readouterr().err

    rows = read_csv_rows(output)
    paths = [row["id"] for row in rows]
    assert sorted(paths) == sorted(os.path.abspath(folder / name) for name in names)  # each image exactly once
    assert [Path(p).name for p in paths[2:]] == ["im1.png", "im3.png", "im5.png"]
    assert all(row["score"] and not row["error"] for row in rows)
    lines = output.read_bytes().splitlines(keepends=True)
    assert lines[:3] == first_lines  # header and the rows of images 2 and 4, byte-identical
    record = json.loads((tmp_path / "scores.csv.meta.json").read_text())
    assert [(run["scored"], run["skipped"]) for run in record["runs"]] == [(2, 0), (3, 2)]
