"""How close a backend's outputs are to PyTorch fp32 on the same pixels, and the gate an export must pass.

fp32 must give fp32's logits: max |Δ| ≤ 1e-4. A lower precision must keep the ranking: the Spearman correlation of
every output column with fp32's ≥ 0.99 and, for a classifier, the same top-1 label on ≥ 98 % of the images.
Quantised CLIP towers have known traps (uint8 ViT-B/32 embeddings drift, int8 activations of ViT-L/14 diverge), so
a precision is only used behind these numbers, measured on real images.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from ..errors import ConfigurationError

FP32_MAX_ABS = 1e-4
MIN_SPEARMAN = 0.99
MIN_TOP1 = 0.98


class AgreementError(ConfigurationError):
    """A backend or precision whose outputs are too far from PyTorch fp32's (one line naming the numbers)."""


@dataclass(frozen=True)
class Agreement:
    """``images`` compared; ``max_abs``: the largest logit difference; ``spearman``: the lowest Spearman correlation
    of an output column (NaN when fp32's column is constant on these images); ``top1``: the share of images with the
    same top label (classifiers), else ``None``."""

    images: int
    max_abs: float
    spearman: float
    top1: float | None = None

    @classmethod
    def measure(cls, reference: np.ndarray, candidate: np.ndarray, classification: bool) -> Agreement:
        """Compare ``candidate`` logits ``(images, outputs)`` with fp32's ``reference``."""
        reference, candidate = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
        if reference.shape != candidate.shape:
            raise ValueError(f"logits of shape {candidate.shape} compared with fp32's {reference.shape}")
        columns = [spearman(reference[:, k], candidate[:, k]) for k in range(reference.shape[1])]
        top1 = float(np.mean(reference.argmax(1) == candidate.argmax(1))) if classification else None
        return cls(len(reference), float(np.abs(reference - candidate).max()), min(columns), top1)

    def shortfalls(self, precision: str) -> list[str]:
        """What falls short of the gate for ``precision``, one phrase each (empty: it passes)."""
        if precision == "fp32":
            fine = self.max_abs <= FP32_MAX_ABS
            return [] if fine else [f"max |Δ| {self.max_abs:.2g} (fp32 needs ≤ {FP32_MAX_ABS:g})"]
        problems = []
        if math.isnan(self.spearman):
            problems.append("Spearman undefined (fp32's scores are all equal on these images: use other images)")
        elif self.spearman < MIN_SPEARMAN:
            problems.append(f"Spearman {self.spearman:.4f} (needs ≥ {MIN_SPEARMAN})")
        if self.top1 is not None and self.top1 < MIN_TOP1:
            problems.append(f"top-1 agreement {self.top1:.1%} (needs ≥ {MIN_TOP1:.0%})")
        return problems

    def text(self) -> str:
        """``"Spearman 0.9971, max |Δ| 3.1e-03, top-1 100.0 % on 32 images"``."""
        top1 = f", top-1 {self.top1:.1%}" if self.top1 is not None else ""
        return f"Spearman {self.spearman:.4f}, max |Δ| {self.max_abs:.2g}{top1} on {self.images} images"

    def as_dict(self) -> dict:
        """As JSON holds it (an undefined Spearman: ``None``)."""
        return {key: None if value != value else value for key, value in asdict(self).items()}


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho; NaN when ``a`` is constant (no ranking to keep), 0 when only ``b`` is."""
    if np.ptp(a) == 0:
        return float("nan")
    if np.ptp(b) == 0:
        return 0.0
    return float(stats.spearmanr(a, b).statistic)


def check_agreement(agreement: Agreement, precision: str, what: str, fix: str) -> None:
    """Refuse ``what`` (e.g. ``"--format onnx --precision int8"``) when ``agreement`` falls short of ``precision``'s
    gate: one line with the measured numbers and ``fix``."""
    problems = agreement.shortfalls(precision)
    if problems:
        also = f", max |Δ| {agreement.max_abs:.2g}" if precision != "fp32" else ""
        raise AgreementError(
            f"{what} refused: against PyTorch fp32 on {agreement.images} images, {'; '.join(problems)}{also}; {fix}"
        )


__all__ = ["Agreement", "AgreementError", "FP32_MAX_ABS", "MIN_SPEARMAN", "MIN_TOP1", "check_agreement"]
