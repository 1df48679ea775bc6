"""Evaluation metrics of the PerceptCLIP paper (pure numpy/scipy).

* IQA: SRCC and PLCC after a 4-parameter logistic fit (median over splits); ``fit="robust"`` (default)
  or ``fit="loda"`` (LoDa's / pyiqa's single-start fit), see :func:`fit_logistic_4pl`.
* Memorability: SRCC and MSE (mean over splits).
* Emotion: accuracy, 2-class (valence) accuracy, mAP, macro-F1, weighted-F1.

Degenerate input never passes silently: correlations of constant, non-finite or too-short input are ``nan`` with a
:class:`DegenerateInputWarning`, a failed 4PL fit falls back to the raw PLCC with a :class:`LogisticFitWarning`, and
inputs of different lengths raise ``ValueError``. Both warnings name the metric and why (:class:`MetricWarning`);
reports collect them with :func:`metric_notes` and say them in words.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Literal, get_args

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "DegenerateInputWarning",
    "LOGISTIC_FITS",
    "LogisticFit",
    "LogisticFitError",
    "LogisticFitWarning",
    "MetricNotes",
    "MetricWarning",
    "aggregate_splits",
    "bootstrap_intervals",
    "classification_metrics",
    "fit_logistic_4pl",
    "krcc",
    "logistic_4pl",
    "metric_label",
    "metric_notes",
    "mse",
    "plcc",
    "plcc_4pl",
    "regression_metrics",
    "softmax",
    "srcc",
]

LogisticFit = Literal["robust", "loda"]
LOGISTIC_FITS: tuple[str, ...] = get_args(LogisticFit)
LOGISTIC_MAXFEV = 100_000  # default of fit="robust"
LODA_MAXFEV = 100_000_000  # LoDa's curve_fit(..., maxfev=100000000)


class MetricWarning(UserWarning):
    """A warning of this module; ``metric`` (e.g. ``"SRCC"``) and ``reason`` (e.g. ``"constant targets"``) say which
    metric and why, for reports to say in words; ``undefined``: the metric was returned as ``nan``."""

    def __init__(self, message: str, metric: str = "", reason: str = "", undefined: bool = False):
        super().__init__(message)
        self.metric, self.reason, self.undefined = metric, reason, undefined


class DegenerateInputWarning(MetricWarning):
    """A metric is undefined for the given input and was returned as ``nan``."""


class LogisticFitWarning(MetricWarning):
    """The 4PL fit failed; the raw PLCC was reported instead."""


class MetricNotes(list[MetricWarning]):
    """The :class:`MetricWarning` s of the metrics computed in a :func:`metric_notes` block."""

    @property
    def undefined(self) -> str | None:
        """Why the ``nan`` metrics are undefined (the first such warning's reason), or ``None``."""
        return next((w.reason for w in self if w.undefined), None)

    @property
    def remarks(self) -> list[str]:
        """The other warnings in words, once each: ``"PLCC: <reason>"``."""
        return list(dict.fromkeys(f"{w.metric}: {w.reason}" for w in self if not w.undefined))


@contextmanager
def metric_notes() -> Iterator[MetricNotes]:
    """Collect the :class:`MetricWarning` s raised inside instead of showing them (the notes are filled when the
    block ends); other warnings are issued again, as if not caught."""
    notes = MetricNotes()
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always", MetricWarning)
        yield notes
    for record in records:
        if isinstance(record.message, MetricWarning):
            notes.append(record.message)
        else:
            warnings.warn_explicit(record.message, record.category, record.filename, record.lineno)


def metric_label(name: str) -> str:
    """How reports name a metric of :func:`regression_metrics` (``"plcc_raw"`` -> ``"PLCC (raw scores)"``)."""
    return "PLCC (raw scores)" if name == "plcc_raw" else name.upper()


def _undefined(metric: str, reason: str, stacklevel: int) -> float:
    """``nan``, with a :class:`DegenerateInputWarning` saying why ``metric`` is undefined."""
    message = f"{metric} is undefined ({reason}); returning nan"
    warnings.warn(DegenerateInputWarning(message, metric, reason, undefined=True), stacklevel=stacklevel + 1)
    return float("nan")


class LogisticFitError(RuntimeError):
    """The 4PL logistic could not be fitted."""


def _paired_arrays(pred: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Flatten ``pred`` and ``y`` to float64 vectors of equal length."""
    pred_arr = np.asarray(pred, dtype=np.float64).reshape(-1)
    y_arr = np.asarray(y, dtype=np.float64).reshape(-1)
    if pred_arr.size != y_arr.size:
        raise ValueError(f"pred has length {pred_arr.size} but y has length {y_arr.size}")
    return pred_arr, y_arr


def _degeneracy(pred: np.ndarray, y: np.ndarray) -> str | None:
    """Why a correlation between ``pred`` and ``y`` is undefined, or ``None``."""
    if pred.size < 2:
        return f"too few items: {pred.size}, needs 2"
    if not (np.isfinite(pred).all() and np.isfinite(y).all()):
        return "non-finite values"
    if np.ptp(pred) == 0:
        return "constant predictions"
    if np.ptp(y) == 0:
        return "constant targets"
    return None


def _correlation(
    name: str, statistic: Callable[[np.ndarray, np.ndarray], float], pred: ArrayLike, y: ArrayLike
) -> float:
    pred_arr, y_arr = _paired_arrays(pred, y)
    reason = _degeneracy(pred_arr, y_arr)
    if reason is not None:
        return _undefined(name, reason, stacklevel=3)
    return float(statistic(pred_arr, y_arr))


def srcc(pred: ArrayLike, y: ArrayLike) -> float:
    """Spearman rank correlation."""
    from scipy import stats  # scipy and sklearn are imported on use: `perceptclip --help` starts without them

    return _correlation("SRCC", lambda a, b: stats.spearmanr(a, b).statistic, pred, y)


def krcc(pred: ArrayLike, y: ArrayLike) -> float:
    """Kendall rank correlation (tau-b)."""
    from scipy import stats

    return _correlation("KRCC", lambda a, b: stats.kendalltau(a, b).statistic, pred, y)


def plcc(pred: ArrayLike, y: ArrayLike) -> float:
    """Pearson linear correlation of the raw predictions."""
    from scipy import stats

    return _correlation("PLCC", lambda a, b: stats.pearsonr(a, b).statistic, pred, y)


def logistic_4pl(x: ArrayLike, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """``b2 + (b1 - b2) / (1 + exp(-(x - b3) / |b4|))``; ``b4`` enters only through ``|b4|``."""
    x = np.asarray(x, dtype=np.float64)
    z = np.clip(-(x - b3) / np.abs(b4), -700.0, 700.0)  # avoid exp overflow
    return b2 + (b1 - b2) / (1.0 + np.exp(z))


def _check_fit(fit: str) -> None:
    if fit not in LOGISTIC_FITS:
        raise ValueError(f"fit must be one of {list(LOGISTIC_FITS)}, got {fit!r}")


def fit_logistic_4pl(
    pred: ArrayLike, y: ArrayLike, maxfev: int | None = None, fit: LogisticFit = "robust"
) -> np.ndarray:
    """Least-squares fit of :func:`logistic_4pl` mapping ``pred`` to ``y``; returns ``[b1, b2, b3, b4]``.

    Both fits start from the IQA protocol's guess ``[max(y), min(y), mean(pred), 0.5]``:

    * ``fit="loda"``: that start only, ``maxfev=100_000_000`` (LoDa's ``fit_function``; pyiqa's is the same).
    * ``fit="robust"`` (default): also from ``b4 = std(pred)`` (for predictions on a wide scale ``b4 = 0.5``
      makes a step function that can trap the optimiser); the fit with the smaller squared error wins;
      ``maxfev=100_000``.

    ``maxfev=None`` takes the fit's default. Raises :class:`LogisticFitError` when no fit succeeds.
    """
    from scipy import optimize

    _check_fit(fit)
    pred_arr, y_arr = _paired_arrays(pred, y)
    if pred_arr.size < 4:
        raise LogisticFitError(f"need at least 4 items to fit 4 parameters, got {pred_arr.size}")
    if maxfev is None:
        maxfev = LODA_MAXFEV if fit == "loda" else LOGISTIC_MAXFEV
    b4_guesses = (0.5,) if fit == "loda" else (0.5, pred_arr.std())
    fits, errors = [], []
    for b4_guess in b4_guesses:
        initial = [y_arr.max(), y_arr.min(), pred_arr.mean(), b4_guess]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optimize.OptimizeWarning)  # covariance is not used
                params, _ = optimize.curve_fit(logistic_4pl, pred_arr, y_arr, p0=initial, maxfev=maxfev)
        except (RuntimeError, ValueError) as error:
            errors.append(str(error))
            continue
        if np.isfinite(params).all() and params[3] != 0:
            fits.append((np.sum((logistic_4pl(pred_arr, *params) - y_arr) ** 2), params))
        else:
            errors.append(f"invalid parameters {params}")
    if not fits:
        raise LogisticFitError(f"4PL fit failed: {'; '.join(errors)}")
    return min(fits, key=lambda candidate: candidate[0])[1]


def plcc_4pl(pred: ArrayLike, y: ArrayLike, fit: LogisticFit = "robust") -> float:
    """PLCC between the 4PL-fitted predictions (:func:`fit_logistic_4pl` with ``fit``) and ``y``.

    The raw PLCC (with a :class:`LogisticFitWarning`) if the fit fails or is constant on the data.
    """
    _check_fit(fit)
    pred_arr, y_arr = _paired_arrays(pred, y)
    if _degeneracy(pred_arr, y_arr) is not None:
        return plcc(pred_arr, y_arr)  # nan with the reason as warning
    try:
        fitted = logistic_4pl(pred_arr, *fit_logistic_4pl(pred_arr, y_arr, fit=fit))
        problem = "4PL fit is constant on the data" if np.ptp(fitted) == 0 else None
    except LogisticFitError as error:
        problem = str(error)
    if problem is None:
        return plcc(fitted, y_arr)
    reason = f"no 4-parameter fit ({problem}); the PLCC of the raw scores instead"
    warnings.warn(LogisticFitWarning(f"{problem}; reporting the raw PLCC instead", "PLCC", reason), stacklevel=2)
    return plcc(pred_arr, y_arr)


def mse(pred: ArrayLike, y: ArrayLike) -> float:
    """Mean squared error."""
    pred_arr, y_arr = _paired_arrays(pred, y)
    if pred_arr.size == 0:
        return _undefined("MSE", "no items", stacklevel=2)
    return float(np.mean((pred_arr - y_arr) ** 2))


def regression_metrics(pred: ArrayLike, y: ArrayLike, fit: LogisticFit = "robust") -> dict[str, float]:
    """IQA / memorability metrics: ``srcc``, ``plcc`` (after the 4PL ``fit``), ``krcc``, ``mse``, ``plcc_raw``."""
    _check_fit(fit)
    pred_arr, y_arr = _paired_arrays(pred, y)
    return {
        "srcc": srcc(pred_arr, y_arr),
        "plcc": plcc_4pl(pred_arr, y_arr, fit=fit),
        "krcc": krcc(pred_arr, y_arr),
        "mse": mse(pred_arr, y_arr),
        "plcc_raw": plcc(pred_arr, y_arr),
    }


def bootstrap_intervals(
    pred: ArrayLike,
    y: ArrayLike,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    fit: LogisticFit = "robust",
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of ``srcc``, ``krcc`` and ``plcc`` over ``resamples`` resamplings (with
    replacement, seeded) of the (prediction, label) pairs. PLCC is of the 4PL-fitted predictions, the curve fitted
    once on all pairs (refitting per resample would cost a fit each)."""
    from scipy import stats

    pred_arr, y_arr = _paired_arrays(pred, y)
    reason = _degeneracy(pred_arr, y_arr)
    if reason is not None:  # then every resample is degenerate too
        nan = _undefined("bootstrap intervals", reason, stacklevel=2)
        return {name: (nan, nan) for name in ("srcc", "krcc", "plcc")}
    try:
        fitted = logistic_4pl(pred_arr, *fit_logistic_4pl(pred_arr, y_arr, fit=fit))
    except LogisticFitError:
        fitted = pred_arr
    rows = np.random.default_rng(seed).integers(0, pred_arr.size, (resamples, pred_arr.size))
    values = {
        "srcc": _rowwise_pearson(stats.rankdata(pred_arr[rows], axis=1), stats.rankdata(y_arr[rows], axis=1)),
        "krcc": np.array([stats.kendalltau(pred_arr[r], y_arr[r]).statistic for r in rows]),
        "plcc": _rowwise_pearson(fitted[rows], y_arr[rows]),
    }
    tail = 100 * (1 - confidence) / 2
    return {name: _percentile_interval(name, samples, tail) for name, samples in values.items()}


def _percentile_interval(name: str, samples: np.ndarray, tail: float) -> tuple[float, float]:
    """The ``tail`` and ``100 - tail`` percentiles of the ``samples`` that are not ``nan`` (tied resamples)."""
    defined = samples[~np.isnan(samples)]
    if defined.size == 0:
        return (_undefined(f"{name.upper()} interval", "every resample is degenerate", stacklevel=3),) * 2
    return tuple(float(v) for v in np.percentile(defined, [tail, 100 - tail]))


def _rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of ``a`` with the same row of ``b`` (nan for a constant row)."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(axis=1) / np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``(N, C)`` logits."""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _as_probabilities(scores: np.ndarray) -> np.ndarray:
    """Rows already on the simplex are kept; anything else is treated as logits and softmaxed."""
    on_simplex = (scores >= 0).all() and (scores <= 1).all() and np.allclose(scores.sum(axis=1), 1.0, atol=1e-4)
    return scores if on_simplex else softmax(scores)


def _mean_average_precision(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean over classes of the average precision of the class probability (classes with support only)."""
    present = np.unique(labels)
    missing = probs.shape[1] - present.size
    if missing:
        reason = f"{missing} class(es) have no examples; averaged over the {present.size} present ones"
        warnings.warn(DegenerateInputWarning(f"mAP: {reason}", "mAP", reason), stacklevel=3)
    from sklearn.metrics import average_precision_score  # imported on use: 1.5 s that scoring never needs

    return float(np.mean([average_precision_score(labels == c, probs[:, c]) for c in present]))


def classification_metrics(
    logits_or_probs: ArrayLike,
    labels: ArrayLike,
    positive_classes: Sequence[int] | None = None,
) -> dict[str, float]:
    """Emotion metrics from scores of shape ``(N, C)`` and integer labels of shape ``(N,)``.

    Returns ``accuracy``, ``map``, ``macro_f1``, ``weighted_f1`` and, when ``positive_classes``
    (class indices of positive valence) is given, ``accuracy_2class``: whether the predicted
    (argmax) class has the same valence as the true class. Scores whose rows are not
    probabilities are treated as logits (softmax) for mAP.

    F1 follows sklearn's ``f1_score(average="macro" | "weighted")`` without ``labels=``: only classes
    in labels or predictions count (a class absent from both is left out, not scored 0); a class
    never predicted has precision 0. mAP averages over the classes present in ``labels``.
    """
    scores = np.asarray(logits_or_probs, dtype=np.float64)
    label_arr = np.asarray(labels).reshape(-1)
    if scores.ndim != 2:
        raise ValueError(f"logits_or_probs must have shape (N, C), got {scores.shape}")
    if scores.shape[0] != label_arr.size:
        raise ValueError(f"logits_or_probs has length {scores.shape[0]} but labels has length {label_arr.size}")
    if not np.isfinite(scores).all():
        raise ValueError("logits_or_probs contains non-finite values")
    num_classes = scores.shape[1]
    if label_arr.size == 0 or not np.issubdtype(label_arr.dtype, np.integer):
        raise ValueError(f"labels must be a non-empty integer array, got dtype {label_arr.dtype} size {label_arr.size}")
    if label_arr.min() < 0 or label_arr.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got range [{label_arr.min()}, {label_arr.max()}]")

    from sklearn.metrics import f1_score  # imported on use: 1.5 s that scoring never needs

    predicted = scores.argmax(axis=1)
    results = {
        "accuracy": float(np.mean(predicted == label_arr)),
        "map": _mean_average_precision(_as_probabilities(scores), label_arr),
        "macro_f1": float(f1_score(label_arr, predicted, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(label_arr, predicted, average="weighted", zero_division=0)),
    }
    if positive_classes is not None:
        positive = np.asarray(list(positive_classes), dtype=np.int64)
        if positive.size == 0 or positive.min() < 0 or positive.max() >= num_classes:
            raise ValueError(
                f"positive_classes must be non-empty indices in [0, {num_classes}), got {positive.tolist()}"
            )
        results["accuracy_2class"] = float(np.mean(np.isin(predicted, positive) == np.isin(label_arr, positive)))
    return results


def aggregate_splits(
    split_metrics: Sequence[Mapping[str, float]], how: Literal["median", "mean"] = "median"
) -> dict[str, float]:
    """Aggregate per-split metric dicts (IQA: median, memorability / emotion: mean). Keys must match."""
    reducers = {"median": np.median, "mean": np.mean}
    if how not in reducers:
        raise ValueError(f"how must be one of {sorted(reducers)}, got {how!r}")
    if not split_metrics:
        raise ValueError("split_metrics is empty")
    keys = list(split_metrics[0])
    for index, metrics in enumerate(split_metrics):
        if set(metrics) != set(keys):
            raise ValueError(f"split {index} has keys {sorted(metrics)}, expected {sorted(keys)}")
    return {key: float(reducers[how]([metrics[key] for metrics in split_metrics])) for key in keys}
