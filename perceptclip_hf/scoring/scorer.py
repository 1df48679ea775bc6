"""Inference for people: score images with a trained PerceptCLIP model.

    >>> from perceptclip_hf.scoring.scorer import PerceptScorer
    >>> scorer = PerceptScorer.from_pretrained("path/or/hub-id")
    >>> scorer("photo.jpg")                      # {"score": 3.71}           (regression)
    >>> scorer(["a.jpg", "b.png"])               # [{"label": "awe", "probabilities": {...}}, ...]

Preprocessing follows the paper's test protocol (:mod:`perceptclip_hf.preprocessing`, the task's crop policy):
image quality models average ``tta`` seeded random crops at native resolution (15 by default; ``tta=1`` is a
native center crop), other tasks resize the short side and center-crop. All crops of a batch go through the
model in one forward pass.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from typing import Any, Literal

import numpy as np
import torch
from datasets import Dataset
from PIL import Image

from ..backends.graph import hash_tensors, merge_lora_weights
from ..backends.runtimes import check_backend
from ..data import DatasetInfo, get_dataset_info
from ..data.errors import DatasetFormatError
from ..errors import ModelLoadError, loading_model
from ..hub.source import OFFICIAL_TASKS, ModelSource
from ..modeling import PerceptCLIPPreTrainedModel
from ..preprocessing import build_inference_transform
from ..tasks import task_of_config
from .devices import DTYPES, default_batch_size, precision_name, resolve_device, resolve_dtype
from .input_pipeline import Engine, PreparedBatch, is_single_image, prepare_image
from .workers import default_num_workers

ImageInput = Image.Image | str | os.PathLike | np.ndarray
OnError = Literal["raise", "record"]
PROBE_IMAGES = 32  # procedural images --backend auto measures the candidates on


def load_model(
    source: str | os.PathLike | ModelSource, attn_implementation: str = "sdpa", *, task: str | None = None, **kwargs
) -> PerceptCLIPPreTrainedModel:
    """Load a PerceptCLIP model (local directory, Hub id, or a :class:`~perceptclip_hf.hub.source.ModelSource`, which
    carries its own task: ``task`` then does not apply) in eval mode.

    Official checkpoints are accepted too: an alias (`quality`, `memorability`, `emotion`), an official Hub repo, a
    folder holding one `.pth` and no `config.json`, or the `.pth`. They are converted once and cached
    (:func:`perceptclip_hf.hub.official.official_model_dir`); `task` names the task of a 1-output official head (IQA or
    memorability cannot be told apart), `base_model_name_or_path` its base CLIP (default ViT-L/14)."""
    from transformers import AutoModel

    from ..hub.official import official_model_dir

    source = ModelSource.of(source, task)
    model_id, task = source.location, source.task
    base = kwargs.get("base_model_name_or_path")
    hub_kwargs = {key: kwargs.pop(key) for key in ("revision", "token") if key in kwargs}
    if source.official:
        with loading_model(model_id, also_check=(base,) if base else (), hint=source.hint):
            folder = official_model_dir(source, base_model=base, **hub_kwargs)
        model_id, hub_kwargs = str(folder), {}
    base = base or base_model_of(model_id)
    with loading_model(model_id, also_check=(base,) if base else ()):
        model = AutoModel.from_pretrained(model_id, attn_implementation=attn_implementation, **hub_kwargs, **kwargs)
    if not isinstance(model, PerceptCLIPPreTrainedModel):
        raise ModelLoadError(
            f"--model {model_id} holds a {type(model).__name__}, not a PerceptCLIP model; pass a "
            "folder written by a PerceptCLIP model's save_pretrained (or train.py)"
        )
    if task is not None and task != model.config.task:
        raise ModelLoadError(
            f"--task {task}: the model {model_id} is a {model.config.task!r} model (--task applies "
            f"to official checkpoints: {', '.join(sorted(set(OFFICIAL_TASKS.values())))})"
        )
    return model.eval()


def base_model_of(model_dir: str) -> str | None:
    """The backbone a saved adapter-only model loads its frozen weights from (``None`` if not recorded)."""
    try:
        with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as handle:
            return json.load(handle).get("base_model_name_or_path")
    except (OSError, ValueError):
        return None


class PerceptScorer:
    """Scores images with a PerceptCLIP model: regression → ``{"score": float}``; classification →
    ``{"label": str, "probabilities": {label: p}}``. Call it on one image (PIL, path, numpy array), a list of
    them, or a ``datasets.Dataset`` with an ``image`` column.

    ``num_workers`` processes decode and crop the images ahead of the model (default: the CPUs available, at most 8;
    0: in this process); results are the same and in the same order. ``merge_lora`` folds LoRA into the base weights
    of ``model`` in place (same outputs within float error, faster); :meth:`from_pretrained` does it for the model it
    loads. ``fast_decode`` decodes JPEGs reduced where the resize shrinks them anyway (faster, slightly other
    scores). ``dataset``: a benchmark (name or ``DatasetInfo``) whose test protocol applies (its resize and filter;
    the transform is decided by :func:`perceptclip_hf.preprocessing.build_inference_transform`).

    ``backend``: where the forward pass runs — ``"torch"``, or on the CPU the model exported (LoRA merged) for
    ``"onnxruntime"`` or ``"openvino"`` (:mod:`perceptclip_hf.backends`): the export ``exports`` (a folder written by
    ``perceptclip export``; default: the model's own folder) records for this model, else one made once and cached;
    ``"auto"``: on the CPU, the fastest of them that agrees with fp32 on this machine (measured once, cached:
    ``choice``), on a GPU torch.
    ``dtype`` means the same on every backend: ``"fp32"`` (the CPU default), ``"bf16"``, ``"fp16"``, ``"int8"``
    (ONNX Runtime's int8 weights)."""

    def __init__(
        self,
        model: PerceptCLIPPreTrainedModel,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        tta: int | None = None,
        seed: int = 0,
        batch_size: int | None = None,
        resize_short: int | None = None,
        interpolation: str | None = None,
        dataset: DatasetInfo | str | None = None,
        num_workers: int | None = None,
        merge_lora: bool = False,
        fast_decode: bool = False,
        backend: str = "torch",
        exports: str | os.PathLike | None = None,
    ):
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}.")
        if num_workers is not None and num_workers < 0:
            raise ValueError(f"num_workers must be ≥ 0 (0 = prepare images in this process), got {num_workers}.")
        self.device = resolve_device(device if backend in ("torch", "auto") or device is not None else "cpu")
        if backend == "auto" and self.device.type != "cpu":  # the exported backends run on the CPU
            backend = "torch"
        self.dtype = resolve_dtype(dtype, self.device)
        self.backend, self.precision = backend, precision_name(self.dtype)
        check_backend(backend, self.precision, str(self.device))
        self.model = model.eval().to(self.device)
        self.config = model.config
        self.batch_size = batch_size or default_batch_size(self.device)
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self.fast_decode = fast_decode
        self.transform = build_inference_transform(
            self.config,
            task_of_config(self.config),
            tta=tta,
            seed=seed,
            resize_short=resize_short,
            interpolation=interpolation,
            dataset=get_dataset_info(dataset) if isinstance(dataset, str) else dataset,
        )
        self._fingerprint = None
        if merge_lora:
            self.fingerprint()  # of the trained tensors, before LoRA is folded in
            self.lora_merged = merge_lora_weights(self.model)
        else:
            self.lora_merged = 0
        self.choice = None
        if backend == "auto":
            self.choice = self._choose_backend(exports, given=dtype is not None)
            self.backend, self.precision = self.choice.backend, self.choice.precision
            self.dtype = DTYPES[self.precision]
        self.session = None if self.backend == "torch" else self._backend_session(exports)

    @classmethod
    def from_pretrained(
        cls, repo_or_dir: str | os.PathLike | ModelSource, *, load_kwargs: dict | None = None, **scorer_kwargs: Any
    ) -> PerceptScorer:
        """Load a model and wrap it. `scorer_kwargs` are the constructor's (device, dtype, tta, seed, batch_size,
        resize_short, interpolation, dataset, num_workers, fast_decode, and merge_lora, True here: the scorer owns the
        model it loaded); `load_kwargs` go to `from_pretrained` (e.g. `{"base_model_name_or_path": "/models/clip"}`)."""
        scorer_kwargs.setdefault("merge_lora", True)
        scorer_kwargs.setdefault("exports", own_folder(repo_or_dir))
        return cls(load_model(repo_or_dir, **(load_kwargs or {})), **scorer_kwargs)

    def _choose_backend(self, exports, given: bool):
        """``backend="auto"``: the cached choice for this machine and model, else a probe on procedural images (one
        view each) — :func:`perceptclip_hf.backends.probe.choose_backend`."""
        from ..backends.probe import choose_backend
        from ..data.synthetic import procedural_images

        views = [self.preprocess(image) for image in procedural_images(PROBE_IMAGES)]
        pixels = torch.stack([view[0] if view.dim() == 4 else view for view in views])
        size = (self.transform.crop_size, self.transform.crop_size)
        precision = self.precision if given else None
        return choose_backend(self.model, self.fingerprint(), size, pixels, self.is_classification, precision, exports)

    def _backend_session(self, exports):
        from ..backends.sessions import backend_session

        size = (self.transform.crop_size, self.transform.crop_size)
        return backend_session(self.model, self.fingerprint(), size, self.backend, self.precision, exports)

    @property
    def export_fingerprint(self) -> str | None:
        """The sha256 (16 hex digits) of the exported file the backend runs (``None`` on torch)."""
        return self.session.export if self.session is not None else None

    @property
    def engine(self) -> Engine:
        """The input engine of this scorer's settings (batch size, workers, device, decoding)."""
        return Engine(self.device, self.batch_size, self.num_workers, self.fast_decode)

    # ----- what the scores mean -------------------------------------------------------------------------------

    @property
    def is_classification(self) -> bool:
        return self.config.is_classification

    @property
    def labels(self) -> list[str]:
        """Class names in logit order (classification)."""
        return [str(self.config.id2label[i]) for i in range(len(self.config.id2label))]

    @property
    def score_range(self) -> tuple[float, float] | None:
        """``(low, high)`` of the training scores, when the model records it."""
        return tuple(self.config.score_range) if self.config.score_range else None

    @property
    def higher_is_better(self) -> bool:
        return self.config.higher_is_better

    @property
    def num_crops(self) -> int:
        return getattr(self.transform, "num_crops", 1)

    def fingerprint(self) -> str:
        """A short hash of what the model computes with: its trained tensors (LoRA and heads, or every weight of a
        fully fine-tuned model) and the backbone it loads. Equal fingerprints ⇒ equal scores, wherever the model
        folder lives."""
        if self._fingerprint is None:  # computed once: the trained tensors do not change while scoring
            digest = hashlib.sha256(str(self.config.base_model_name_or_path).encode())
            state = self.model.state_dict() if self.config.adaptation == "full" else self.model.adapter_state_dict()
            self._fingerprint = hash_tensors(digest, state).hexdigest()[:16]
        return self._fingerprint

    # ----- preprocessing and forward --------------------------------------------------------------------------

    def preprocess(self, image: Any, key: str | None = None) -> torch.Tensor:
        """One image → ``(3, H, W)``, or ``(crops, 3, H, W)`` with TTA. ``key`` seeds the crops (default: pixels)."""
        return self.transform.normalize(prepare_image(self.transform, image, key, self.fast_decode))

    @torch.inference_mode()
    def predict_logits(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Float32 logits of a batch ``(B, 3, H, W)`` or ``(B, crops, 3, H, W)`` (crops averaged), one forward pass.
        Integer pixels (0..255: the input engine's uint8, or any integer dtype) are normalised on the device; float
        pixels are taken as normalised (:meth:`preprocess`'s)."""
        pixel_values = pixel_values.to(self.device, non_blocking=True)
        if not pixel_values.is_floating_point():
            pixel_values = self.transform.normalize(as_uint8(pixel_values))
        if self.session is not None:
            return self._session_logits(pixel_values)
        autocast = torch.autocast(self.device.type, dtype=self.dtype) if self.dtype != torch.float32 else nullcontext()
        with autocast:
            logits = self.model(pixel_values).logits
        return logits.float().cpu()

    def _session_logits(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The exported graph's logits: crops flattened into the batch before it, averaged after it (as the model
        does)."""
        crops = pixel_values.shape[1] if pixel_values.dim() == 5 else None
        flat = pixel_values.flatten(0, 1) if crops else pixel_values
        logits = torch.from_numpy(self.session(flat.float().contiguous().numpy()))
        return logits.unflatten(0, (-1, crops)).mean(dim=1) if crops else logits

    def format(self, logits: torch.Tensor) -> dict[str, Any]:
        """One image's logits → its result dict."""
        if not self.is_classification:
            scores = logits.tolist()
            return {"score": scores[0]} if len(scores) == 1 else {"scores": scores}
        if self.config.problem_type == "multi_label_classification":
            probabilities = logits.sigmoid()
        else:
            probabilities = logits.softmax(dim=-1)
        labels = self.labels
        return {
            "label": labels[int(probabilities.argmax())],
            "probabilities": {label: float(p) for label, p in zip(labels, probabilities)},
        }

    # ----- public calls ---------------------------------------------------------------------------------------

    def __call__(self, images: ImageInput | Iterable[ImageInput] | Dataset, on_error: OnError = "raise"):
        """Results for ``images``: one dict for one image, else a list in input order."""
        if is_single_image(images):
            return next(self.iter_predictions([images], on_error=on_error))
        return list(self.iter_predictions(images, on_error=on_error))

    def iter_predictions(
        self, images: Iterable[ImageInput] | Dataset, on_error: OnError = "raise"
    ) -> Iterator[dict[str, Any]]:
        """Yield one result per image, in order, ``batch_size`` images per forward pass; decoding and crops run in
        ``num_workers`` processes ahead of the model (:mod:`.input_pipeline`).

        ``on_error="record"`` yields ``{"error": message}`` for an unreadable image instead of raising."""
        check_on_error(on_error)
        yield from self.engine.run(images, self.transform, lambda batch: batch_results(batch, on_error, self.predict))

    def predict(self, pixel_values: torch.Tensor) -> list[dict[str, Any]]:
        """The result dicts of a batch of pixels (:meth:`predict_logits`, then :meth:`format`)."""
        return [self.format(row) for row in self.predict_logits(pixel_values)]


def own_folder(source: str | os.PathLike | ModelSource) -> str | None:
    """A model's local folder (where ``perceptclip export`` puts the exports the backends look for first)."""
    location = ModelSource.of(source).location
    return location if os.path.isdir(location) else None


def as_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """Integer pixels of any dtype as uint8, once their range is known to be 0..255."""
    if pixels.dtype == torch.uint8:
        return pixels
    low, high = int(pixels.min()), int(pixels.max())
    if low < 0 or high > 255:
        raise ValueError(f"{pixels.dtype} pixels with values {low}..{high}: integer pixels must hold 0..255")
    return pixels.to(torch.uint8)


def check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "record"):
        raise ValueError(f"on_error must be 'raise' or 'record', got {on_error!r}.")


def batch_results(batch: PreparedBatch, on_error: OnError, predict: Callable[[Any], list]) -> list[Any]:
    """A prepared batch's results in input order: ``predict(pixel_values)`` for the readable images, ``{"error":
    message}`` for the others (or their first exception raised, with ``on_error="raise"``)."""
    if batch.errors and on_error == "raise":
        raise batch.errors[min(batch.errors)]
    results: list[Any] = [None] * batch.size
    for position, err in batch.errors.items():
        results[position] = {"error": error_message(err)}
    if batch.ok:
        for position, result in zip(batch.ok, predict(batch.pixel_values)):
            results[position] = result
    return results


def error_message(err: Exception) -> str:
    """A one-line reason; the data layer's errors already name the file."""
    return str(err) if isinstance(err, DatasetFormatError) else f"{type(err).__name__}: {err}"


__all__ = [
    "PerceptScorer",
    "load_model",
    "merge_lora_weights",
]
