"""Local evaluate module: emotion metrics of PerceptCLIP (see perceptclip_hf.metrics)."""

import datasets
import evaluate

from perceptclip_hf.metrics import classification_metrics

_DESCRIPTION = (
    "Accuracy, 2-class (valence) accuracy, mAP (mean over classes of the average precision "
    "of the class probability, over classes present in the references), macro-F1 and weighted-F1 "
    "(sklearn's convention: over classes present in references or predictions) from per-class scores."
)

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): per-class logits or probabilities, shape (N, C).
    references (`list` of `int`): true class indices.
    positive_classes (`list` of `int`, *optional*): indices of positive-valence classes; adds `accuracy_2class`.
Returns:
    dict with `accuracy`, `map`, `macro_f1`, `weighted_f1` and, with `positive_classes`, `accuracy_2class`.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PerceptualClassification(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float64")), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, positive_classes=None) -> dict:
        return classification_metrics(predictions, references, positive_classes=positive_classes)
