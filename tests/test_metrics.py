"""Metrics against independent scipy / sklearn computations, and the shipped evaluate modules."""

import numpy as np
import pytest
from scipy import optimize, stats
from sklearn.metrics import accuracy_score, average_precision_score, f1_score

from perceptclip_hf import metrics
from perceptclip_hf.metrics import (
    DegenerateInputWarning,
    LogisticFitWarning,
    aggregate_splits,
    classification_metrics,
    fit_logistic_4pl,
    krcc,
    logistic_4pl,
    mse,
    plcc,
    plcc_4pl,
    regression_metrics,
    srcc,
)

EMOSET_POSITIVE = [0, 1, 2, 3]  # amusement, awe, contentment, excitement in an 8-class label order


def scores_pair(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.normal(50, 10, n)
    pred = 0.02 * y + rng.normal(0, 0.1, n)
    pred[:20] = np.round(pred[:20], 1)  # some ties for the rank correlations
    return pred, y


def classification_data(n: int = 300, num_classes: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.arange(num_classes), rng.integers(0, num_classes, n - num_classes)])
    logits = rng.normal(size=(n, num_classes)) + 1.5 * np.eye(num_classes)[labels]
    return logits, labels


def softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


# --- regression -------------------------------------------------------------------------------------------


def test_correlations_match_scipy():
    pred, y = scores_pair()
    assert srcc(pred, y) == pytest.approx(stats.spearmanr(pred, y).statistic, abs=1e-12)
    assert krcc(pred, y) == pytest.approx(stats.kendalltau(pred, y).statistic, abs=1e-12)
    assert plcc(pred, y) == pytest.approx(stats.pearsonr(pred, y).statistic, abs=1e-12)


def test_mse_matches_numpy():
    pred, y = scores_pair()
    assert mse(pred, y) == pytest.approx(np.square(pred - y).mean())


def test_column_inputs_are_flattened():
    pred, y = scores_pair()
    assert srcc(pred[:, None], y) == pytest.approx(srcc(pred, y))


@pytest.mark.parametrize("b4_sign", [1.0, -1.0])
@pytest.mark.parametrize("true_params", [(5.0, 1.0, 0.3, 0.8), (1.0, 4.0, -0.5, 0.6)])  # increasing, decreasing
def test_fit_logistic_4pl_recovers_known_parameters(true_params, b4_sign):
    rng = np.random.default_rng(1)
    x = rng.uniform(-3, 3, 400)
    b1, b2, b3, b4 = true_params
    y = logistic_4pl(x, b1, b2, b3, b4_sign * b4) + rng.normal(0, 1e-3, x.size)
    fitted = fit_logistic_4pl(x, y)
    # b4 enters only as |b4|: its sign is not identifiable.
    np.testing.assert_allclose([*fitted[:3], abs(fitted[3])], true_params, atol=2e-2)


def test_plcc_4pl_is_pearson_of_the_fitted_logistic():
    rng = np.random.default_rng(2)
    x = rng.uniform(-3, 3, 300)
    y = logistic_4pl(x, 5.0, 1.0, 0.3, 0.5) + rng.normal(0, 0.05, x.size)
    # Independent fit, written out from the protocol in shared/datasets.md.
    curve = lambda v, b1, b2, b3, b4: b2 + (b1 - b2) / (1 + np.exp(-(v - b3) / abs(b4)))  # noqa: E731
    params, _ = optimize.curve_fit(curve, x, y, p0=[y.max(), y.min(), x.mean(), 0.5], maxfev=100_000)
    expected = stats.pearsonr(curve(x, *params), y).statistic
    assert plcc_4pl(x, y) == pytest.approx(expected, abs=1e-6)
    assert plcc_4pl(x, y) > plcc(x, y) + 0.02  # the logistic removes the non-linearity


def test_fit_logistic_4pl_escapes_the_step_function_trap_of_wide_scale_predictions():
    rng = np.random.default_rng(5)
    y = rng.uniform(0, 100, 500)
    x = 50 * (np.tanh((y - 50) / 29) + rng.normal(size=y.size)) - 100  # std(pred) ~ 60 >> 0.5
    # The protocol's guess alone (b4 = 0.5) converges to a near-step function, worse than a line.
    params, _ = optimize.curve_fit(logistic_4pl, x, y, p0=[y.max(), y.min(), x.mean(), 0.5], maxfev=100_000)
    assert stats.pearsonr(logistic_4pl(x, *params), y).statistic < plcc(x, y) - 0.03
    assert plcc_4pl(x, y) > plcc(x, y)


def test_plcc_4pl_falls_back_to_raw_plcc_with_warning(monkeypatch):
    pred, y = scores_pair()

    def failing_curve_fit(*args, **kwargs):
        raise RuntimeError("Optimal parameters not found: Number of calls to function has reached maxfev")

    monkeypatch.setattr(metrics.optimize, "curve_fit", failing_curve_fit)
    with pytest.warns(LogisticFitWarning, match="raw PLCC"):
        value = plcc_4pl(pred, y)
    assert value == pytest.approx(stats.pearsonr(pred, y).statistic)


def test_plcc_4pl_too_few_items_falls_back_with_warning():
    with pytest.warns(LogisticFitWarning, match="at least 4"):
        assert plcc_4pl([1.0, 2.0, 4.0], [1.0, 3.0, 2.0]) == pytest.approx(plcc([1.0, 2.0, 4.0], [1.0, 3.0, 2.0]))


@pytest.mark.parametrize("metric", [srcc, krcc, plcc, plcc_4pl])
@pytest.mark.parametrize(
    "pred, y, reason",
    [
        ([2.0, 2.0, 2.0, 2.0, 2.0], [1.0, 2.0, 3.0, 4.0, 5.0], "constant predictions"),
        ([1.0, 2.0, 3.0, 4.0, 5.0], [3.0, 3.0, 3.0, 3.0, 3.0], "constant targets"),
        ([1.0, np.nan, 3.0, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0, 5.0], "non-finite"),
        ([1.0], [2.0], "fewer than 2"),
    ],
)
def test_degenerate_correlations_are_nan_with_warning(metric, pred, y, reason):
    with pytest.warns(DegenerateInputWarning, match=reason):
        assert np.isnan(metric(pred, y))


@pytest.mark.parametrize("metric", [srcc, krcc, plcc, plcc_4pl, mse, regression_metrics, fit_logistic_4pl])
def test_mismatched_lengths_raise_naming_both(metric):
    with pytest.raises(ValueError, match="length 3 but y has length 4"):
        metric([1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0])


def test_regression_metrics_combines_the_functions():
    pred, y = scores_pair()
    assert regression_metrics(pred, y) == {
        "srcc": srcc(pred, y),
        "plcc": plcc_4pl(pred, y),
        "krcc": krcc(pred, y),
        "mse": mse(pred, y),
        "plcc_raw": plcc(pred, y),
    }


# --- classification ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("as_probabilities", [False, True])
def test_classification_metrics_match_sklearn(as_probabilities):
    logits, labels = classification_data()
    probs = softmax(logits)
    predicted = logits.argmax(axis=1)
    one_hot = np.eye(logits.shape[1])[labels]
    result = classification_metrics(probs if as_probabilities else logits, labels)
    assert result["accuracy"] == pytest.approx(accuracy_score(labels, predicted))
    assert result["map"] == pytest.approx(average_precision_score(one_hot, probs, average="macro"))
    assert result["macro_f1"] == pytest.approx(f1_score(labels, predicted, average="macro"))
    assert result["weighted_f1"] == pytest.approx(f1_score(labels, predicted, average="weighted"))
    assert "accuracy_2class" not in result


def test_accuracy_2class_compares_valence_of_argmax():
    logits, labels = classification_data()
    predicted = logits.argmax(axis=1)
    positive = np.isin(np.arange(8), EMOSET_POSITIVE)
    expected = accuracy_score(positive[labels], positive[predicted])
    result = classification_metrics(logits, labels, positive_classes=EMOSET_POSITIVE)
    assert result["accuracy_2class"] == pytest.approx(expected)
    # Confusions inside one valence group count as correct for the 2-class accuracy only.
    probs = np.array([[0.1, 0.9, 0.0], [0.0, 0.2, 0.8], [0.2, 0.7, 0.1]])
    result = classification_metrics(probs, [0, 2, 1], positive_classes=[0, 1])
    assert result["accuracy"] == pytest.approx(2 / 3) and result["accuracy_2class"] == 1.0


def test_map_over_present_classes_warns_about_absent_ones():
    logits, labels = classification_data(num_classes=4)
    keep = labels != 3
    with pytest.warns(DegenerateInputWarning, match="1 class"):
        result = classification_metrics(logits[keep], labels[keep])
    probs = softmax(logits[keep])
    expected = np.mean([average_precision_score(labels[keep] == c, probs[:, c]) for c in range(3)])
    assert result["map"] == pytest.approx(expected)


@pytest.mark.parametrize(
    "scores, labels, message",
    [
        (np.zeros((3, 2)), [0, 1], "length 3 but labels has length 2"),
        (np.zeros(3), [0, 1, 1], r"shape \(N, C\)"),
        (np.zeros((3, 2)), [0, 1, 2], r"\[0, 2\)"),
        (np.zeros((2, 2)), [0.0, 1.0], "integer"),
        (np.full((2, 2), np.nan), [0, 1], "non-finite"),
    ],
)
def test_classification_metrics_rejects_bad_input(scores, labels, message):
    with pytest.raises(ValueError, match=message):
        classification_metrics(scores, labels)


def test_positive_classes_out_of_range_raise():
    with pytest.raises(ValueError, match="positive_classes"):
        classification_metrics(np.eye(3), [0, 1, 2], positive_classes=[5])


# --- splits -----------------------------------------------------------------------------------------------


def test_aggregate_splits_median_and_mean():
    splits = [{"srcc": 0.1, "plcc": 1.0}, {"srcc": 0.5, "plcc": 2.0}, {"srcc": 0.9, "plcc": 6.0}]
    assert aggregate_splits(splits) == {"srcc": 0.5, "plcc": 2.0}
    assert aggregate_splits(splits, how="mean") == pytest.approx({"srcc": 0.5, "plcc": 3.0})


@pytest.mark.parametrize(
    "splits, how, message",
    [
        ([{"srcc": 0.1}, {"plcc": 0.2}], "median", "split 1 has keys"),
        ([], "median", "empty"),
        ([{"srcc": 0.1}], "max", "how must be one of"),
    ],
)
def test_aggregate_splits_rejects_bad_input(splits, how, message):
    with pytest.raises(ValueError, match=message):
        aggregate_splits(splits, how=how)


# --- local evaluate modules -------------------------------------------------------------------------------


@pytest.fixture
def offline(monkeypatch):
    import evaluate

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", True)


def test_regression_module_loads_offline_and_matches_functions(offline):
    from perceptclip_hf.evaluate_modules import load_metric

    pred, y = scores_pair()
    module = load_metric("perceptual_regression")
    for start in range(0, pred.size, 64):  # streamed as evaluation batches arrive
        module.add_batch(predictions=pred[start : start + 64], references=y[start : start + 64])
    assert module.compute() == pytest.approx(regression_metrics(pred, y))


def test_classification_module_loads_offline_and_matches_functions(offline):
    from perceptclip_hf.evaluate_modules import load_metric

    logits, labels = classification_data()
    result = load_metric("perceptual_classification").compute(
        predictions=logits, references=labels, positive_classes=EMOSET_POSITIVE
    )
    assert result == pytest.approx(classification_metrics(logits, labels, positive_classes=EMOSET_POSITIVE))


def test_modules_combine_with_evaluate(offline):
    import evaluate

    from perceptclip_hf.evaluate_modules import METRICS_DIR

    pred, y = scores_pair()
    combined = evaluate.combine([str(METRICS_DIR / "perceptual_regression")])
    assert combined.compute(predictions=pred, references=y) == pytest.approx(regression_metrics(pred, y))


def test_load_metric_rejects_unknown_name():
    from perceptclip_hf.evaluate_modules import load_metric

    with pytest.raises(ValueError, match="perceptual_regression"):
        load_metric("spearmanr")
