"""Per-epoch replicas: each IQA training image is seen ``replicas`` times per epoch (LoDa)."""

from __future__ import annotations

from datasets import Dataset


def repeat_dataset(ds: Dataset, replicas: int) -> Dataset:
    """``ds`` repeated ``replicas`` times through an index mapping (no data copy): length ``len(ds) * replicas``.

    The transform set on ``ds`` is kept; random augmentations differ between the copies.
    """
    if replicas < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas}")
    if replicas == 1:
        return ds
    repeated = ds.select(list(range(len(ds))) * replicas)
    return repeated
