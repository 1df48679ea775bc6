"""Several models in one pass: each image is decoded once and every model scores it.

    >>> from perceptclip_hf.scoring.model_set import ScorerSet
    >>> models = ScorerSet.from_pretrained({"quality": "quality", "emotion": "emotion", "memorability": "memorability"})
    >>> models("photo.jpg")    # {"quality": {"score": ...}, "emotion": {"label": ..., ...}, "memorability": {...}}

The input engine prepares each image once for all the models (one decode; equal test transforms applied once,
:class:`.input_pipeline.TransformSet`). Models on the same base backbone share its frozen weights in memory
(:func:`share_base_weights`: one copy of the base, each model its LoRA matrices and head); their LoRA then stays
unmerged, since folding it in would change the shared base. A model whose base no other model has is merged as
:class:`.scorer.PerceptScorer` does.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch

from ..hub.source import ModelSource
from .input_pipeline import TransformSet, is_single_image
from .scorer import OnError, PerceptScorer, batch_results, check_on_error, load_model, own_folder


def share_base_weights(models: Iterable[torch.nn.Module]) -> int:
    """Point every parameter and buffer of a later model that equals an earlier model's (same name, shape, dtype
    and values: the frozen base of the same backbone) at that earlier tensor: one copy in memory. Trained tensors
    (LoRA, heads) differ and stay each model's own. Returns the bytes no longer held twice."""
    pool: dict[str, list[torch.Tensor]] = {}
    saved = 0
    for model in models:
        for path, module in model.named_modules():
            for store in (module._parameters, module._buffers):
                for attr, tensor in store.items():
                    if tensor is None:
                        continue
                    name = f"{path}.{attr}:{tuple(tensor.shape)}:{tensor.dtype}"
                    same = next(
                        (
                            earlier
                            for earlier in pool.get(name, ())
                            if earlier is tensor or (earlier.device == tensor.device and torch.equal(earlier, tensor))
                        ),
                        None,
                    )
                    if same is None:
                        pool.setdefault(name, []).append(tensor)
                    elif same is not tensor:
                        store[attr] = same
                        saved += tensor.numel() * tensor.element_size()
    return saved


class ScorerSet:
    """Named :class:`PerceptScorer` s run in one pass; ``scorers`` must share the device, batch size, workers and
    decoding (the set's own engine runs them; each scorer keeps its dtype, the first one's is the set's ``dtype``).
    Results: ``{name: result}`` per image, or ``{"error": message}`` for an unreadable image
    (``on_error="record"``)."""

    def __init__(self, scorers: Mapping[str, PerceptScorer], shared_bytes: int = 0):
        if not scorers:
            raise ValueError("ScorerSet needs at least one scorer.")
        self.scorers = dict(scorers)
        first = next(iter(self.scorers.values()))
        for name, scorer in self.scorers.items():
            for setting in ("device", "batch_size", "num_workers", "fast_decode"):
                if getattr(scorer, setting) != getattr(first, setting):
                    raise ValueError(
                        f"scorer {name!r}: {setting} {getattr(scorer, setting)!r} differs from "
                        f"{getattr(first, setting)!r}; one pass needs the same"
                    )
        self.engine, self.dtype = first.engine, first.dtype
        self.transforms = TransformSet([scorer.transform for scorer in self.scorers.values()])
        self.shared_bytes = shared_bytes

    @classmethod
    def from_pretrained(
        cls,
        models: Mapping[str, str | os.PathLike | ModelSource],
        *,
        load_kwargs: dict | None = None,
        share_base: bool = True,
        **scorer_kwargs: Any,
    ) -> ScorerSet:
        """Load ``{name: model}`` (anything :func:`.scorer.load_model` takes), share equal base weights
        (``share_base``) and wrap each model (``scorer_kwargs`` as for :class:`PerceptScorer`; LoRA is merged into
        the models whose base is not shared)."""
        loaded, shared_bytes = {}, 0
        for name, source in models.items():  # shared as they load: at most one extra base in memory at a time
            loaded[name] = load_model(source, **(load_kwargs or {}))
            if share_base and len(loaded) > 1:
                shared_bytes += share_base_weights(loaded.values())
        holders = Counter(
            identity
            for model in loaded.values()
            for identity in {id(tensor) for tensor in model.state_dict(keep_vars=True).values()}
        )
        merge = scorer_kwargs.pop("merge_lora", True)
        scorers = {}
        for name, model in loaded.items():  # merging LoRA would change a shared base: only models that share none
            shares = any(holders[id(tensor)] > 1 for tensor in model.state_dict(keep_vars=True).values())
            exports = own_folder(models[name])
            scorers[name] = PerceptScorer(model, merge_lora=merge and not shares, exports=exports, **scorer_kwargs)
        return cls(scorers, shared_bytes)

    def __call__(self, images, on_error: OnError = "raise"):
        if is_single_image(images):
            return next(self.iter_predictions([images], on_error=on_error))
        return list(self.iter_predictions(images, on_error=on_error))

    def iter_predictions(self, images, on_error: OnError = "raise") -> Iterator[dict[str, Any]]:
        """One ``{name: result}`` per image, in order; each image decoded once (see the module docstring)."""
        check_on_error(on_error)
        yield from self.engine.run(images, self.transforms, lambda batch: batch_results(batch, on_error, self.predict))

    def predict(self, pixel_values: list[torch.Tensor]) -> list[dict[str, Any]]:
        """Every model's results for a batch prepared by :attr:`transforms` (one tensor per distinct transform)."""
        per_model = {
            name: scorer.predict(pixel_values[slot])
            for (name, scorer), slot in zip(self.scorers.items(), self.transforms.slot)
        }
        return [{name: results[index] for name, results in per_model.items()} for index in range(len(pixel_values[0]))]


__all__ = ["ScorerSet", "share_base_weights"]
