"""Metrics against independent scipy / sklearn computations, and the shipped evaluate modules."""

import warnings

import numpy as np
import pytest
from scipy import optimize, stats
from sklearn.metrics import accuracy_score, average_precision_score, f1_score

from perceptclip_hf.metrics import (
    DegenerateInputWarning,
    LogisticFitWarning,
    aggregate_splits,
    bootstrap_intervals,
    classification_metrics,
    fit_logistic_4pl,
    krcc,
    logistic_4pl,
    metric_notes,
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


def wide_scale_pair(seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Predictions spanning about +-50, a non-linear (tanh) function of the scores plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.uniform(0, 100, 500)
    return 50 * np.tanh((y - 50) / 20) + rng.normal(0, 5, y.size), y


def trap_pair(seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Wide-scale predictions (std ~ 60 >> 0.5) where LoDa's single start converges to a near-step function."""
    rng = np.random.default_rng(seed)
    y = rng.uniform(0, 100, 500)
    return 50 * (np.tanh((y - 50) / 29) + rng.normal(size=y.size)) - 100, y


def classification_data(n: int = 300, num_classes: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.arange(num_classes), rng.integers(0, num_classes, n - num_classes)])
    logits = rng.normal(size=(n, num_classes)) + 1.5 * np.eye(num_classes)[labels]
    return logits, labels


def softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


# --- independent references (re-typed, not imported from perceptclip_hf) ------------------------------------


def loda_logistic(X, bayta1, bayta2, bayta3, bayta4):
    """LoDa's ``logistic_func``, re-typed."""
    logisticPart = 1 + np.exp(np.negative(np.divide(X - bayta3, np.abs(bayta4))))  # noqa: N806
    return bayta2 + np.divide(bayta1 - bayta2, logisticPart)


def loda_fit(y_label, y_output):
    """LoDa's ``fit_function``, re-typed: the logistic-mapped predictions."""
    beta = [np.max(y_label), np.min(y_label), np.mean(y_output), 0.5]
    with np.errstate(over="ignore"):
        popt, _ = optimize.curve_fit(loda_logistic, y_output, y_label, p0=beta, maxfev=100000000)
        return loda_logistic(y_output, *popt)


def loda_plcc(pred, y) -> float:
    return stats.pearsonr(loda_fit(y, pred), y).statistic


def robust_plcc(pred, y) -> float:
    """The documented robust fit: starts b4 = 0.5 and b4 = std(pred), the smaller squared error wins."""
    fitted = []
    with np.errstate(over="ignore"):
        for b4 in (0.5, pred.std()):
            popt, _ = optimize.curve_fit(loda_logistic, pred, y, p0=[y.max(), y.min(), pred.mean(), b4], maxfev=100_000)
            fitted.append(loda_logistic(pred, *popt))
    best = min(fitted, key=lambda f: np.sum((f - y) ** 2))
    return stats.pearsonr(best, y).statistic


def reference_regression(pred, y, fit: str = "robust") -> dict[str, float]:
    return {
        "srcc": stats.spearmanr(pred, y).statistic,
        "plcc": (loda_plcc if fit == "loda" else robust_plcc)(pred, y),
        "krcc": stats.kendalltau(pred, y).statistic,
        "mse": np.square(pred - y).mean(),
        "plcc_raw": stats.pearsonr(pred, y).statistic,
    }


def reference_classification(logits, labels, positive_classes=None) -> dict[str, float]:
    probs = softmax(logits)
    predicted = logits.argmax(axis=1)
    present = np.unique(labels)
    result = {
        "accuracy": accuracy_score(labels, predicted),
        "map": average_precision_score(np.eye(logits.shape[1])[labels][:, present], probs[:, present]),
        "macro_f1": f1_score(labels, predicted, average="macro"),
        "weighted_f1": f1_score(labels, predicted, average="weighted"),
    }
    if positive_classes is not None:
        positive = np.isin(np.arange(logits.shape[1]), positive_classes)
        result["accuracy_2class"] = accuracy_score(positive[labels], positive[predicted])
    return result


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
    assert srcc(pred[:, None], y) == pytest.approx(stats.spearmanr(pred, y).statistic, abs=1e-12)


@pytest.mark.parametrize("params", [(5.0, 1.0, 0.3, 0.8), (1.0, 4.0, -0.5, -0.6), (2.0, -1.0, 40.0, 0.5)])
def test_logistic_4pl_is_lodas_logistic_func(params):
    x = np.linspace(-50, 50, 201)
    np.testing.assert_allclose(logistic_4pl(x, *params), loda_logistic(x, *params), rtol=0, atol=1e-12)


@pytest.mark.parametrize("fit", ["robust", "loda"])
@pytest.mark.parametrize("b4_sign", [1.0, -1.0])
@pytest.mark.parametrize("true_params", [(5.0, 1.0, 0.3, 0.8), (1.0, 4.0, -0.5, 0.6)])  # increasing, decreasing
def test_fit_logistic_4pl_recovers_known_parameters(true_params, b4_sign, fit):
    rng = np.random.default_rng(1)
    x = rng.uniform(-3, 3, 400)
    b1, b2, b3, b4 = true_params
    y = loda_logistic(x, b1, b2, b3, b4_sign * b4) + rng.normal(0, 1e-3, x.size)
    fitted = fit_logistic_4pl(x, y, fit=fit)
    # b4 enters only as |b4|: its sign is not identifiable.
    np.testing.assert_allclose([*fitted[:3], abs(fitted[3])], true_params, atol=2e-2)


@pytest.mark.parametrize("pair", [wide_scale_pair, trap_pair])
def test_loda_fit_reproduces_lodas_fit_function(pair):
    pred, y = pair()
    expected_fitted = loda_fit(y, pred)
    np.testing.assert_allclose(
        logistic_4pl(pred, *fit_logistic_4pl(pred, y, fit="loda")), expected_fitted, rtol=0, atol=1e-9
    )
    assert plcc_4pl(pred, y, fit="loda") == pytest.approx(stats.pearsonr(expected_fitted, y).statistic, abs=1e-9)


@pytest.mark.parametrize("fit, starts", [("loda", 1), ("robust", 2)])
def test_first_start_vector_is_the_protocols_guess(monkeypatch, fit, starts):
    pred, y = wide_scale_pair()
    real_curve_fit, calls = optimize.curve_fit, []

    def spy(f, xdata, ydata, p0=None, **kwargs):
        calls.append((list(p0), kwargs.get("maxfev")))
        return real_curve_fit(f, xdata, ydata, p0=p0, **kwargs)

    monkeypatch.setattr(optimize, "curve_fit", spy)  # metrics imports scipy.optimize on use
    plcc_4pl(pred, y, fit=fit)
    assert len(calls) == starts
    assert calls[0][0] == [np.max(y), np.min(y), np.mean(pred), 0.5]  # b1 = max(y), b2 = min(y): not swapped
    assert calls[0][1] == (100_000_000 if fit == "loda" else 100_000)


def test_robust_and_loda_fits_agree_on_predictions_spanning_a_few_units():
    rng = np.random.default_rng(2)
    x = rng.uniform(-3, 3, 300)
    y = loda_logistic(x, 5.0, 1.0, 0.3, 0.5) + rng.normal(0, 0.05, x.size)
    expected = loda_plcc(x, y)
    assert plcc_4pl(x, y, fit="robust") == pytest.approx(expected, abs=1e-6)
    assert plcc_4pl(x, y, fit="loda") == pytest.approx(expected, abs=1e-6)
    assert expected > stats.pearsonr(x, y).statistic + 0.02  # the logistic removes the non-linearity


def test_robust_fit_escapes_the_step_function_trap_of_wide_scale_predictions():
    pred, y = trap_pair()
    raw = stats.pearsonr(pred, y).statistic
    assert loda_plcc(pred, y) < raw - 0.03  # LoDa's single start converges to a near-step function
    assert plcc_4pl(pred, y) == pytest.approx(robust_plcc(pred, y), abs=1e-6)
    assert plcc_4pl(pred, y) > raw


@pytest.mark.parametrize("metric", [plcc_4pl, regression_metrics, fit_logistic_4pl])
def test_unknown_fit_is_rejected(metric):
    with pytest.raises(ValueError, match="fit must be one of"):
        metric([2.0, 2.0, 2.0, 2.0], [1.0, 2.0, 3.0, 4.0], fit="pyiqa")  # even where no fit would run


def test_plcc_4pl_falls_back_to_raw_plcc_with_warning(monkeypatch):
    pred, y = scores_pair()

    def failing_curve_fit(*args, **kwargs):
        raise RuntimeError("Optimal parameters not found: Number of calls to function has reached maxfev")

    monkeypatch.setattr(optimize, "curve_fit", failing_curve_fit)
    with pytest.warns(LogisticFitWarning, match="raw PLCC"):
        value = plcc_4pl(pred, y)
    assert value == pytest.approx(stats.pearsonr(pred, y).statistic)


def test_plcc_4pl_too_few_items_falls_back_with_warning():
    pred, y = [1.0, 2.0, 4.0], [1.0, 3.0, 2.0]
    with pytest.warns(LogisticFitWarning, match="at least 4"):
        assert plcc_4pl(pred, y) == pytest.approx(stats.pearsonr(pred, y).statistic)


@pytest.mark.parametrize("metric", [srcc, krcc, plcc, plcc_4pl])
@pytest.mark.parametrize(
    "pred, y, reason",
    [
        ([2.0, 2.0, 2.0, 2.0, 2.0], [1.0, 2.0, 3.0, 4.0, 5.0], "constant predictions"),
        ([1.0, 2.0, 3.0, 4.0, 5.0], [3.0, 3.0, 3.0, 3.0, 3.0], "constant targets"),
        ([1.0, np.nan, 3.0, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0, 5.0], "non-finite"),
        ([1.0], [2.0], "too few items: 1, needs 2"),
    ],
)
def test_degenerate_correlations_are_nan_with_warning(metric, pred, y, reason):
    with pytest.warns(DegenerateInputWarning, match=reason):
        assert np.isnan(metric(pred, y))


def test_bootstrap_intervals_of_degenerate_input_are_nan_with_the_reason_only():
    """Constant targets: every resample is degenerate; one DegenerateInputWarning says why, no numpy All-NaN noise."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        intervals = bootstrap_intervals([1.0, 2.0, 3.0, 4.0, 5.0], [3.0] * 5, resamples=50)
    assert set(intervals) == {"srcc", "krcc", "plcc"} and np.isnan(list(intervals.values())).all()
    assert [type(w.message) for w in caught] == [DegenerateInputWarning]
    assert caught[0].message.reason == "constant targets"


def test_metric_notes_keep_the_reasons_and_show_nothing_else_of_the_metrics():
    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter("always")
        with metric_notes() as undefined:
            regression_metrics([1.0, 2.0, 3.0, 4.0, 5.0], [3.0] * 5)
        with metric_notes() as fell_back:
            plcc_4pl([1.0, 2.0, 4.0], [1.0, 3.0, 2.0])
            warnings.warn("not a metric's", RuntimeWarning, stacklevel=1)
    assert undefined.undefined == "constant targets" and undefined.remarks == []
    assert fell_back.undefined is None and fell_back.remarks == [
        "PLCC: no 4-parameter fit (need at least 4 items to fit 4 parameters, got 3); "
        "the PLCC of the raw scores instead"
    ]
    assert [str(w.message) for w in escaped] == ["not a metric's"]  # other warnings are issued as usual


@pytest.mark.parametrize("metric", [srcc, krcc, plcc, plcc_4pl, mse, regression_metrics, fit_logistic_4pl])
def test_mismatched_lengths_raise_naming_both(metric):
    with pytest.raises(ValueError, match="length 3 but y has length 4"):
        metric([1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0])


@pytest.mark.parametrize("fit", ["robust", "loda"])
def test_regression_metrics_match_scipy_and_the_retyped_fits(fit):
    pred, y = wide_scale_pair()
    assert regression_metrics(pred, y, fit=fit) == pytest.approx(reference_regression(pred, y, fit), abs=1e-6)


# --- classification ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("as_probabilities", [False, True])
def test_classification_metrics_match_sklearn(as_probabilities):
    logits, labels = classification_data()
    result = classification_metrics(softmax(logits) if as_probabilities else logits, labels)
    assert result == pytest.approx(reference_classification(logits, labels))  # no accuracy_2class either


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


def test_f1_leaves_out_a_class_absent_from_labels_and_predictions():
    logits, labels = classification_data(num_classes=4)
    keep = labels != 3
    logits, labels = logits[keep], labels[keep]
    logits[:, 3] = -100.0  # class 3 is never predicted either
    with pytest.warns(DegenerateInputWarning):  # mAP: class 3 has no examples
        result = classification_metrics(logits, labels)
    predicted = logits.argmax(axis=1)
    assert result["macro_f1"] == pytest.approx(f1_score(labels, predicted, average="macro"), abs=1e-12)
    assert result["weighted_f1"] == pytest.approx(f1_score(labels, predicted, average="weighted"), abs=1e-12)


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


@pytest.mark.parametrize("fit", [None, "loda"])
def test_regression_module_loads_offline_and_matches_scipy(offline, fit):
    from perceptclip_hf.evaluation.evaluate_modules import load_metric

    pred, y = wide_scale_pair()
    module = load_metric("perceptual_regression")
    for start in range(0, pred.size, 64):  # streamed as evaluation batches arrive
        module.add_batch(predictions=pred[start : start + 64], references=y[start : start + 64])
    result = module.compute() if fit is None else module.compute(fit=fit)
    assert result == pytest.approx(reference_regression(pred, y, fit or "robust"), abs=1e-6)


def test_classification_module_loads_offline_and_matches_sklearn(offline):
    from perceptclip_hf.evaluation.evaluate_modules import load_metric

    logits, labels = classification_data()
    result = load_metric("perceptual_classification").compute(
        predictions=logits, references=labels, positive_classes=EMOSET_POSITIVE
    )
    assert result == pytest.approx(reference_classification(logits, labels, EMOSET_POSITIVE))


def test_modules_combine_with_evaluate(offline):
    import evaluate

    from perceptclip_hf.evaluation.evaluate_modules import METRICS_DIR

    pred, y = scores_pair()
    combined = evaluate.combine([str(METRICS_DIR / "perceptual_regression")])
    assert combined.compute(predictions=pred, references=y) == pytest.approx(reference_regression(pred, y), abs=1e-6)


def test_load_metric_rejects_unknown_name():
    from perceptclip_hf.evaluation.evaluate_modules import load_metric

    with pytest.raises(ValueError, match="perceptual_regression"):
        load_metric("spearmanr")
