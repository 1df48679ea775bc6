# Copyright 2026 The perceptclip-hf authors. Licensed under the MIT licence.
"""PerceptCLIP training losses: PLCC (IQA), MSE (memorability), cross-entropy (emotion). Remote code.

The PLCC loss is a per-batch statistic, `(1 - pearson(pred, target)) / 2` in `[0, 1]`: it must never be divided by
`num_items_in_batch`, so the models set `accepts_loss_kwargs = False` and `Trainer` divides each micro-batch loss by
the gradient-accumulation steps, i.e. the optimised loss is the mean of the micro-batch losses.
"""

import math

import torch
from torch import nn


def _flat_pair(predictions: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flatten `(B,)` / `(B, 1)` predictions and targets; targets cast to the predictions' dtype."""
    predictions, targets = predictions.reshape(-1), targets.reshape(-1).to(predictions.dtype)
    if predictions.numel() != targets.numel():
        raise ValueError(f"{predictions.numel()} predictions for {targets.numel()} targets.")
    return predictions, targets


def plcc_loss(predictions: torch.Tensor, targets: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """`(1 - r) / 2` with `r` the Pearson correlation of the batch (paper sec. 4.1): 0 when perfectly correlated,
    1 when anti-correlated. Population statistics, so duplicating a batch leaves it unchanged; constant predictions
    give 0.5 with a finite gradient. A per-batch statistic: never divide it by a number of items."""
    predictions, targets = _flat_pair(predictions, targets)
    if predictions.numel() < 2:
        raise ValueError(f"plcc_loss needs at least 2 items per batch, got {predictions.numel()}.")
    pred_centered, target_centered = predictions - predictions.mean(), targets - targets.mean()
    root_n = math.sqrt(predictions.numel())
    covariance = (pred_centered * target_centered).mean()
    # vector_norm has a zero (not nan) gradient at 0, unlike sqrt(mean(x ** 2)).
    std_product = (torch.linalg.vector_norm(pred_centered) / root_n) * (
        torch.linalg.vector_norm(target_centered) / root_n
    )
    return (1 - covariance / (std_product + eps)) / 2


def mse_loss(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared error on `(B,)` / `(B, 1)` predictions (no silent broadcasting)."""
    return nn.functional.mse_loss(*_flat_pair(predictions, targets))


def cross_entropy_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of `(B, C)` logits against integer labels `(B,)`."""
    return nn.functional.cross_entropy(logits, labels.reshape(-1).long())


LOSSES = {"plcc": plcc_loss, "mse": mse_loss, "cross_entropy": cross_entropy_loss}


def get_loss_fn(name: str):
    """Loss function by name: `"plcc"`, `"mse"` or `"cross_entropy"`."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; available: {sorted(LOSSES)}") from None


def task_loss(loss_name: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The loss named by `config.loss` of a head's logits. A PLCC batch of one item (say, the last evaluation
    batch) holds no correlation: it contributes a zero loss instead of failing."""
    if loss_name == "plcc" and logits.shape[0] < 2:
        return logits.sum() * 0.0
    return get_loss_fn(loss_name)(logits, labels)


__all__ = ["LOSSES", "cross_entropy_loss", "get_loss_fn", "mse_loss", "plcc_loss", "task_loss"]
