"""Local evaluate module: IQA / memorability metrics of PerceptCLIP (see perceptclip_hf.metrics)."""

import datasets
import evaluate

from perceptclip_hf.metrics import regression_metrics

_DESCRIPTION = (
    "SRCC, PLCC after a 4-parameter logistic fit (robust two-start fit, or LoDa's single-start one; "
    "raw PLCC with a warning if the fit fails), "
    "KRCC, MSE and the raw PLCC between scalar predictions and scores."
)

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `float`): predicted scores.
    references (`list` of `float`): ground-truth scores (e.g. MOS, memorability).
    fit (`str`, *optional*): the 4PL fit for `plcc`: `"robust"` (default) or `"loda"` (LoDa / pyiqa).
Returns:
    dict with `srcc`, `plcc`, `krcc`, `mse`, `plcc_raw` (floats; nan with a warning if undefined).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PerceptualRegression(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
        )

    def _compute(self, predictions, references, fit="robust") -> dict:
        return regression_metrics(predictions, references, fit=fit)
