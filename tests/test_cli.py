"""The `perceptclip` command: in this process (exit status, stdout, stderr), and as the installed console script."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from perceptclip_hf import PerceptCLIPForRegression
from perceptclip_hf.cli import main
from perceptclip_hf.explain.interpretability import head_importance
from perceptclip_hf.preprocessing import center_view_transform
from tests.helpers.cli import perceptclip, perceptclip_process, read_rows
from tests.helpers.datasets import make_emoset, make_koniq
from tests.helpers.models import hooked_masked_logits, random_image

SUMMARY = re.compile(r"summary: (\d+) scored, (\d+) failed, (\d+) skipped")


def summary_counts(stderr: str) -> tuple[int, int, int]:
    match = SUMMARY.search(stderr)
    assert match, f"no summary line in:\n{stderr}"
    return tuple(int(n) for n in match.groups())


@pytest.fixture
def photo_folder(tmp_path) -> Path:
    """50 images (15 in a sub-folder), 3 corrupt image files, one text file to ignore."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for index in range(50):
        random_image(index, size=(40 + index % 5, 36)).save(
            folder / ("sub" if index % 10 < 3 else "") / f"im{index:02d}.png"
        )
    (folder / "bad_empty.jpg").write_bytes(b"")
    (folder / "bad_text.png").write_bytes(b"this is not a png")
    truncated = (folder / "sub" / "im00.png").read_bytes()
    (folder / "sub" / "bad_truncated.png").write_bytes(truncated[: len(truncated) // 2])
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_predict_folder_with_corrupt_files_then_resume(quality_dir, photo_folder, tmp_path):
    output = tmp_path / "scores.csv"
    first = perceptclip(
        "predict", photo_folder, "--model", quality_dir, "--output", output, "--batch-size", "8", cwd=tmp_path
    )
    assert first.returncode == 0, first.stderr
    rows = read_rows(output)
    errors = [row for row in rows if row["error"]]
    assert len(rows) == 53 and len(errors) == 3
    assert {Path(row["id"]).name for row in errors} == {"bad_empty.jpg", "bad_text.png", "bad_truncated.png"}
    assert sum("/sub/" in row["id"] for row in rows) == 16
    # The tiny quality model has the task's PLCC loss: a relative score, with no range beside it.
    assert all(
        row["score_scale"] == "relative"
        and row["score_min"] == row["score_max"] == ""
        and row["higher_is_better"] == "True"
        for row in rows
        if not row["error"]
    )
    assert summary_counts(first.stderr) == (50, 3, 0)

    # An interrupted run: the header, 20 rows and half of the 21st line.
    lines = output.read_text().splitlines(keepends=True)
    output.write_text("".join(lines[:21]) + lines[21][:10])
    resumed = perceptclip("predict", photo_folder, "--model", quality_dir, "--output", output, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    failed_before = sum(bool(row["error"]) for row in rows[:20])
    assert summary_counts(resumed.stderr) == (33 - (3 - failed_before), 3 - failed_before, 20)
    final = read_rows(output)
    assert len(final) == 53 and len({row["id"] for row in final}) == 53
    scores = {row["id"]: row["score"] for row in rows}  # seeded crops: the same scores (up to batching)
    assert all(
        row["score"] == scores[row["id"]] == "" or abs(float(row["score"]) - float(scores[row["id"]])) < 1e-5
        for row in final
    )


def test_explain_writes_heatmaps_and_head_importance(quality_dir, tmp_path):
    for index in range(3):
        random_image(index, size=(48, 40)).save(tmp_path / f"face{index}.png")
    out = tmp_path / "explain"
    result = perceptclip(
        "explain",
        *(tmp_path / f"face{i}.png" for i in range(3)),
        "--model",
        quality_dir,
        "--out",
        out,
        "--top-k",
        "2",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "head_importance.json").read_text())
    assert len(report["importance"]) == 2 and all(len(row) == 4 for row in report["importance"])
    assert len(report["ranking"]) == 8 and len(report["heatmaps"]) == 3 * 2 * 2
    for name in report["heatmaps"]:
        with Image.open(out / name) as image:
            image.verify()
    # Masking the most important head changes the prediction more than masking the least important one.
    model = PerceptCLIPForRegression.from_pretrained(quality_dir).eval()
    transform = center_view_transform(model.config)
    pixels = torch.stack(
        [transform.transform_image(Image.open(tmp_path / f"face{i}.png").convert("RGB"), None) for i in range(3)]
    )
    with torch.no_grad():
        baseline = model(pixels).logits
    top, low = report["ranking"][0], report["ranking"][-1]
    change = lambda head: (hooked_masked_logits(model, pixels, head["layer"], head["head"]) - baseline).abs().mean()  # noqa: E731
    assert change(top) > change(low)
    assert torch.allclose(head_importance(model, pixels), torch.tensor(report["importance"]), atol=1e-6)


def test_installed_console_script(quality_dir, tmp_path):
    executable = shutil.which("perceptclip")
    if executable is None:
        pytest.skip("the `perceptclip` console script is not installed (pip install -e . after adding the entry point)")
    random_image(0).save(tmp_path / "one.png")
    result = perceptclip_process("predict", "one.png", "--model", quality_dir, "--tta", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith("id,score") and "one.png," in result.stdout


def test_predict_emotion_jsonl_has_label_and_probabilities(emotion_dir, tmp_path, capsys):
    for index in range(3):
        random_image(index).save(tmp_path / f"im{index}.jpg")
    output = tmp_path / "emotions.jsonl"
    assert main(["predict", str(tmp_path / "im*.jpg"), "--model", str(emotion_dir), "-o", str(output)]) == 0
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(rows) == 3 and all(row["label"] in row["probabilities"] for row in rows)
    assert all(len(row["probabilities"]) == 8 for row in rows)
    assert summary_counts(capsys.readouterr().err) == (3, 0, 0)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["predict", "{empty}", "--model", "{model}"], "no images found"),
        (["predict", "{images}/missing.png", "--model", "{model}"], "no such file or directory"),
        (["predict", "{images}", "--model", "{empty}"], "no config.json"),
        (["predict", "{images}", "--model", "/no/such/model"], "no such model directory"),
        (["predict", "{images}", "--model", "{model}", "--resume"], "need --output"),
        (["predict", "{images}", "--model", "{model}", "-o", "{images}/done.csv"], "exists"),
        (["predict", "{images}", "--model", "{model}", "-o", "out.txt"], ".csv, .jsonl or .parquet"),
        (["evaluate", "--model", "{model}", "--dataset", "imagenet", "--data-dir", "{images}"], "unknown dataset"),
        pytest.param(
            ["predict", "{images}", "--model", "{model}", "--device", "cuda"],
            "CUDA is not available",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available"),
        ),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(arguments, message, quality_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "images").mkdir()
    random_image(0).save(tmp_path / "images" / "a.png")
    (tmp_path / "images" / "done.csv").write_text("path,score\n")
    values = {"empty": tmp_path / "empty", "images": tmp_path / "images", "model": quality_dir}
    assert main([argument.format(**values) for argument in arguments]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "command, option",
    [("predict", "--resume"), ("evaluate", "--split-index"), ("explain", "--top-k"), ("list", "--task")],
)
def test_help_of_each_command(command, option, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0 and option in capsys.readouterr().out


def evaluate(model, dataset: str, data_dir, *options) -> int:
    """`perceptclip evaluate -m MODEL -d DATASET --data-dir DIR OPTIONS` in this process; its exit status."""
    return main(["evaluate", "-m", str(model), "-d", dataset, "--data-dir", str(data_dir), *map(str, options)])


def test_evaluate_regression_and_classification_benchmarks(quality_dir, emotion_dir, tmp_path, capsys):
    make_koniq(tmp_path / "koniq", n=20)
    make_emoset(tmp_path / "emoset", per_class=1)
    assert evaluate(quality_dir, "KonIQ-10k", tmp_path / "koniq", "--tta", "2", "-o", tmp_path / "koniq.json") == 0
    koniq = json.loads((tmp_path / "koniq.json").read_text())
    assert koniq["num_images"] == 4 and {"srcc", "plcc", "krcc", "mse"} <= set(koniq["metrics"])
    capsys.readouterr()
    assert evaluate(emotion_dir, "emoset", tmp_path / "emoset") == 0
    emoset = json.loads(capsys.readouterr().out)
    assert emoset["num_images"] == 8 and {"accuracy", "accuracy_2class", "map", "macro_f1"} <= set(emoset["metrics"])


@pytest.mark.parametrize("fit, starts", [("loda", 1), ("robust", 2)])
def test_evaluate_plcc_fit_reaches_the_logistic_fit(fit, starts, quality_dir, tmp_path, capsys, monkeypatch):
    """`--plcc-fit loda` runs LoDa's single-start fit on the benchmark's labels; the default runs two starts."""
    from scipy import optimize  # metrics imports it on use: the spy is on scipy's module

    make_koniq(tmp_path / "koniq", n=40)
    real_curve_fit, starts_seen = optimize.curve_fit, []

    def spy(f, xdata, ydata, p0=None, **kwargs):
        starts_seen.append((list(p0), sorted(ydata)))
        return real_curve_fit(f, xdata, ydata, p0=p0, **kwargs)

    monkeypatch.setattr(optimize, "curve_fit", spy)
    assert evaluate(quality_dir, "koniq10k", tmp_path / "koniq", "--tta", "2", "--plcc-fit", fit) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["plcc_fit"] == fit and report["num_images"] == 8 and len(starts_seen) == starts
    p0, labels = starts_seen[0]
    assert p0[:2] == [max(labels), min(labels)] and p0[3] == 0.5 and len(labels) == 8


def test_list_shows_the_registry(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("koniq10k", "lamem", "emoset"))
