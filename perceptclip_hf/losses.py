"""Training losses: PLCC (IQA), MSE (memorability) and cross-entropy (emotion).

They live in the remote code (`modeling/modeling_perceptclip.py`, the model's `forward` uses them) and are
re-exported here. The PLCC loss is a per-batch statistic, `(1 - pearson(pred, target)) / 2` in `[0, 1]`: it must
never be divided by `num_items_in_batch`, so the models set `accepts_loss_kwargs = False` and `Trainer` divides each
micro-batch loss by the gradient-accumulation steps, i.e. the optimised loss is the mean of the micro-batch losses.
(Passing it as `Trainer(compute_loss_func=...)` would skip that division and sum them.)
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .modeling.modeling_perceptclip import LOSSES, cross_entropy_loss, mse_loss, plcc_loss, task_loss

__all__ = ["LOSSES", "LossFn", "cross_entropy_loss", "get_loss_fn", "mse_loss", "plcc_loss", "task_loss"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def get_loss_fn(name: str) -> LossFn:
    """Loss function by name: `"plcc"`, `"mse"` or `"cross_entropy"`."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; available: {sorted(LOSSES)}") from None
