"""Reports: figures PIL opens, a report.html that needs no other file, report.md naming only files beside it,
bootstrap intervals against a re-typed reference, confusion-matrix counts, and `perceptclip evaluate --report`."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from perceptclip_hf.cli import main
from perceptclip_hf.metrics import (
    MetricWarning,
    bootstrap_intervals,
    fit_logistic_4pl,
    logistic_4pl,
    regression_metrics,
)
from perceptclip_hf.reports import classification_report, regression_report
from tests.helpers.cli import assert_report_folder, perceptclip
from tests.helpers.datasets import KONIQ_HEADER, make_emoset, make_koniq, write_csv
from tests.helpers.paths import AGIQA_DIR


def images(folder: Path, count: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        path = folder / f"{index:03d}.png"
        Image.fromarray(rng.integers(0, 255, (24, 30, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_regression_report_figures_metrics_and_the_most_over_and_under_rated(tmp_path):
    rng = np.random.default_rng(1)
    labels = rng.uniform(1, 5, 40)
    scores = 0.1 * labels + rng.normal(0, 0.05, 40)  # a relative score: another scale, same ranking (mostly)
    scores[7] += 1.0  # far above the curve: the most over-rated
    report = regression_report(tmp_path / "out", "test", images(tmp_path / "img", 40), scores, labels, resamples=200)
    pngs = assert_report_folder(tmp_path / "out")
    assert {"scatter.png", "residuals.png", "distributions.png", "over_rated.png", "under_rated.png"} == pngs
    assert report.values["metrics"] == pytest.approx(regression_metrics(scores, labels))
    residuals = logistic_4pl(scores, *fit_logistic_4pl(scores, labels)) - labels
    assert np.argmax(residuals) == 7
    text = (tmp_path / "out" / "report.md").read_text()
    assert (
        "| SRCC | {:.4f} | {:.4f} – {:.4f} |".format(
            report.values["metrics"]["srcc"], *report.values["intervals"]["srcc"]
        )
        in text
    )


def metric_and_numpy_warnings(recorded) -> list[str]:
    """The metrics' warnings and numpy's RuntimeWarnings (e.g. "All-NaN slice") among `recorded` ones."""
    return [str(w.message) for w in recorded if issubclass(w.category, (MetricWarning, RuntimeWarning))]


CONSTANT = "undefined (constant targets)"
ONE_IMAGE = "undefined (too few items: 1, needs 2)"
NO_FIT = "PLCC: no 4-parameter fit (need at least 4 items to fit 4 parameters, got 3); the PLCC of the raw scores"


@pytest.mark.parametrize(
    "scores, labels, markdown, html",
    [
        (
            [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            [3.0] * 6,
            [f"| SRCC | {CONSTANT} | {CONSTANT} |", f"| PLCC (raw scores) | {CONSTANT} |  |"],
            f"<td>SRCC</td><td>{CONSTANT}</td><td>{CONSTANT}</td>",
        ),
        ([1.0], [2.0], [f"| KRCC | {ONE_IMAGE} | {ONE_IMAGE} |"], f"<td>KRCC</td><td>{ONE_IMAGE}</td>"),
        ([1.0, 2.0, 4.0], [1.0, 3.0, 2.0], [f"{NO_FIT} instead."], f"<p>{NO_FIT} instead.</p>"),
    ],
)
def test_a_report_says_in_words_why_a_metric_is_undefined_or_fell_back(
    scores, labels, markdown, html, tmp_path, recwarn
):
    regression_report(tmp_path / "out", "test", images(tmp_path / "img", len(scores)), scores, labels, resamples=50)
    text = (tmp_path / "out" / "report.md").read_text()
    assert all(line in text for line in markdown) and "nan" not in text.split("## Predicted")[0]
    assert html in (tmp_path / "out" / "report.html").read_text()
    assert metric_and_numpy_warnings(recwarn) == []


def test_evaluate_says_in_words_why_metrics_are_undefined(quality_dir, tmp_path, recwarn):
    """A benchmark whose human scores are all equal: the summary and the report say why, no raw warning."""
    make_koniq(tmp_path / "koniq", n=20)
    write_csv(
        tmp_path / "koniq" / "koniq10k_scores_and_distributions.csv",
        KONIQ_HEADER,
        [[f"{1000 + i}.jpg", 1, 2, 3, 4, 5, 15, 3.0, 0.5, 60.0] for i in range(20)],
    )
    options = ["-d", "koniq10k", "--data-dir", tmp_path / "koniq", "--tta", "1", "--report", tmp_path / "out"]
    result = perceptclip("evaluate", "-m", quality_dir, *options, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "koniq10k: SRCC, PLCC, KRCC, PLCC (raw scores): undefined (constant targets)\n" in result.stderr
    assert "Warning" not in result.stderr and metric_and_numpy_warnings(recwarn) == []
    assert (
        "| SRCC | undefined (constant targets) | undefined (constant targets) |"
        in (tmp_path / "out" / "report.md").read_text()
    )

    def refuse(constant: str):
        raise AssertionError(f"{constant} is not JSON")

    metrics = json.loads(result.stdout, parse_constant=refuse)["metrics"]  # strict JSON: an undefined metric is null
    assert metrics["srcc"] is None and metrics["plcc"] is None


def test_bootstrap_intervals_match_a_retyped_percentile_bootstrap():
    rng = np.random.default_rng(3)
    labels = rng.normal(size=50)
    scores = labels + rng.normal(size=50)
    got = bootstrap_intervals(scores, labels, resamples=300, seed=5)
    fitted = logistic_4pl(scores, *fit_logistic_4pl(scores, labels))
    rows = np.random.default_rng(5).integers(0, 50, (300, 50))
    samples = {
        "srcc": [stats.spearmanr(scores[r], labels[r]).statistic for r in rows],
        "krcc": [stats.kendalltau(scores[r], labels[r]).statistic for r in rows],
        "plcc": [stats.pearsonr(fitted[r], labels[r]).statistic for r in rows],
    }
    for name, values in samples.items():
        assert got[name] == pytest.approx(tuple(np.percentile(values, [2.5, 97.5])), abs=1e-9), name
        point = {"srcc": stats.spearmanr, "krcc": stats.kendalltau}.get(name)
        if point:
            assert got[name][0] < point(scores, labels).statistic < got[name][1]


def test_classification_report_counts_every_image_once(tmp_path):
    rng = np.random.default_rng(2)
    probabilities = rng.dirichlet(np.ones(4), 30)
    labels = rng.integers(0, 4, 30)
    report = classification_report(
        tmp_path / "out", "test", images(tmp_path / "img", 30), probabilities, labels, ["a", "b", "c", "d"]
    )
    assert {"confusion_matrix.png", "confident_mistakes.png"} == assert_report_folder(tmp_path / "out")
    counts = np.zeros((4, 4), dtype=int)
    for true, predicted in zip(labels, probabilities.argmax(axis=1)):
        counts[true, predicted] += 1
    assert report.values["confusion_matrix"] == counts.tolist() and counts.sum() == 30
    recall_a = counts[0, 0] / counts[0].sum()
    assert (
        f"| a | {counts[0, 0] / counts[:, 0].sum():.4f} | {recall_a:.4f} |"
        in (tmp_path / "out" / "report.md").read_text()
    )


def test_evaluate_report_of_a_classifier_sums_to_the_test_size(emotion_dir, tmp_path, capsys):
    make_emoset(tmp_path / "emoset", per_class=1)
    out = tmp_path / "report"
    evaluate = ["evaluate", "-m", str(emotion_dir), "-d", "emoset", "--data-dir", str(tmp_path / "emoset"), "--report"]
    assert main([*evaluate, str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert "confusion_matrix.png" in assert_report_folder(out)
    saved = json.loads((out / "evaluation.json").read_text())
    assert saved == printed and printed["num_images"] == 8
    table = (out / "report.md").read_text().split("## Per class")[1]
    support = [
        int(line.rsplit("|", 2)[1])
        for line in table.splitlines()
        if line.startswith("| ") and not line.startswith("| class")
    ]
    assert len(support) == 8 and sum(support) == 8
    # The folder is this command's: a second run replaces its report; a folder of other files is refused.
    assert main([*evaluate, str(out)]) == 0
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "mine.txt").write_text("keep")
    assert main([*evaluate, str(tmp_path / "photos")]) == 2
    assert (tmp_path / "photos" / "mine.txt").read_text() == "keep"


def test_evaluate_report_on_agiqa3k_as_a_user_runs_it(quality_dir, tmp_path):
    if not AGIQA_DIR.is_dir():
        pytest.skip(f"real AGIQA-3K data not found at {AGIQA_DIR}")
    result = perceptclip(
        "evaluate",
        "--model",
        quality_dir,
        "--dataset",
        "agiqa3k",
        "--data-dir",
        AGIQA_DIR,
        "--report",
        tmp_path / "out",
        "--tta",
        "1",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    pngs = assert_report_folder(tmp_path / "out")
    assert {"scatter.png", "over_rated.png", "under_rated.png"} <= pngs
    report = (tmp_path / "out" / "report.md").read_text()
    assert "597 images" in report and "relative score" in report  # the tiny model's loss is the task's: PLCC
