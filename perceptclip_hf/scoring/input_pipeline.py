"""The scoring input engine: images to model-ready batches, decoded and transformed in parallel.

``iter_prepared_batches(sources, transform, batch_size, num_workers)`` runs decoding and the test transform
(:mod:`..preprocessing`) in ``torch.utils.data.DataLoader`` worker processes: each worker builds whole batches of
images × crops as uint8 pixels (a quarter of float32's bytes to pass between processes and to the accelerator;
the scorer normalises them on its device), so the next batches are ready while the model runs on the current one.
Batches come back in input order (a sequential batch sampler, in-order delivery); an image that cannot be read is
carried in its batch as the exception it raised, so the caller decides to raise it or to record it, and the other
images of the batch are scored. ``num_workers=0`` prepares in the calling process; a single batch is always
prepared there (worker start-up would cost more than it overlaps). On CUDA the batches come in pinned memory, for
non-blocking copies.

Sources are ``(image, crop key)`` pairs: anything :func:`..data.images.open_image` opens (path, bytes, ``{"path",
"bytes"}`` dict, PIL image) or a numpy array (:func:`as_image_source`). The crop key seeds the IQA test crops
(``None``: the pixels do), so scores do not depend on the number of workers.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from PIL import Image

from ..data.images import open_image
from ..preprocessing import undecoded

Source = tuple[Any, "str | None"]  # (image, crop key)


def prepare_image(transform, source: Any, key: str | None = None, fast_decode: bool = False) -> torch.Tensor:
    """One source → its test pixels, uint8 ``(3, H, W)``, or ``(crops, 3, H, W)`` for multi-crop transforms
    (``transform.normalize`` makes them model inputs). ``fast_decode``: JPEGs that the transform shrinks anyway are
    decoded reduced (draft mode; other pixels)."""
    draft_scale = transform.min_decode_scale if fast_decode else None
    return transform.pixels(open_image(as_image_source(source), draft_scale), key)


@dataclass
class PreparedBatch:
    """``size`` consecutive inputs: ``pixel_values`` stacks the readable ones (their positions in ``ok``);
    ``errors`` maps the position of each unreadable one to its exception."""

    size: int
    pixel_values: torch.Tensor | list[torch.Tensor] | None
    ok: list[int] = field(default_factory=list)
    errors: dict[int, BaseException] = field(default_factory=dict)

    def pin_memory(self) -> PreparedBatch:
        """Called by the DataLoader's pinning thread (CUDA)."""
        if isinstance(self.pixel_values, torch.Tensor):
            self.pixel_values = self.pixel_values.pin_memory()
        elif self.pixel_values is not None:  # a TransformSet's batch: one tensor per transform
            self.pixel_values = [pixels.pin_memory() for pixels in self.pixel_values]
        return self


class TransformSet:
    """Several test transforms of one decoded image (several models in one pass): :meth:`pixels` gives one tensor
    per distinct transform (equal transforms are applied once; ``slot[i]`` is where transform ``i`` lands)."""

    def __init__(self, transforms: Sequence[Any]):
        signatures: list[str] = []
        self.transforms, self.slot = [], []
        for transform in transforms:
            signature = f"{type(transform).__qualname__}{sorted(vars(transform).items())!r}"
            if signature not in signatures:
                signatures.append(signature)
                self.transforms.append(transform)
            self.slot.append(signatures.index(signature))

    def pixels(self, image: Image.Image, key: str | None) -> tuple[torch.Tensor, ...]:
        return tuple(transform.pixels(image, key) for transform in self.transforms)

    def min_decode_scale(self, size: tuple[int, int]) -> float | None:
        """The scale every transform can take (a reduced decode changes none of them)."""
        scales = [transform.min_decode_scale(size) for transform in self.transforms]
        return None if None in scales else max(scales)


class _PreparedImages(torch.utils.data.Dataset):
    """Map-style view of the sources: item ``i`` is the prepared tensor of source ``i``, or its exception."""

    def __init__(self, sources: Sequence[Source], transform, fast_decode: bool = False):
        self.sources, self.transform, self.fast_decode = sources, transform, fast_decode

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> torch.Tensor | tuple[torch.Tensor, ...] | BaseException:
        try:
            return prepare_image(self.transform, *self.sources[index], fast_decode=self.fast_decode)
        except Exception as err:  # an unreadable image is a result, not a crash
            return err if torch.utils.data.get_worker_info() is None else picklable(err)


def picklable(err: BaseException) -> BaseException:
    """``err`` if it survives the trip from a worker process, else a ``RuntimeError`` with its message."""
    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:
        return RuntimeError(f"{type(err).__name__}: {err}")


def collate(items: list[torch.Tensor | tuple[torch.Tensor, ...] | BaseException]) -> PreparedBatch:
    """One batch; in a worker the pixels are stacked straight into shared memory (``default_collate``), so passing
    them to the main process copies nothing. A :class:`TransformSet`'s tuples become one stacked tensor per
    transform."""
    ok = [i for i, item in enumerate(items) if not isinstance(item, BaseException)]
    errors = {i: item for i, item in enumerate(items) if isinstance(item, BaseException)}
    pixels = torch.utils.data.default_collate([items[i] for i in ok]) if ok else None
    return PreparedBatch(len(items), pixels, ok, errors)


def worker_count(num_images: int, batch_size: int, num_workers: int) -> int:
    """Workers actually started: none for a single batch, never more than there are batches."""
    batches = -(-num_images // batch_size)
    return min(num_workers, batches) if batches > 1 else 0


def iter_prepared_batches(
    sources: Sequence[Source],
    transform,
    batch_size: int,
    num_workers: int = 0,
    pin_memory: bool = False,
    fast_decode: bool = False,
) -> Iterator[PreparedBatch]:
    """Prepared batches of ``batch_size`` consecutive sources, in order (see the module docstring)."""
    workers = worker_count(len(sources), batch_size, num_workers)
    loader = torch.utils.data.DataLoader(
        _PreparedImages(sources, transform, fast_decode),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        prefetch_factor=2 if workers else None,
        worker_init_fn=quiet_when_main_has_gone,
    )
    yield from loader


def quiet_when_main_has_gone(worker_id: int) -> None:
    """In a worker: the connection errors of the threads that hand batches to the main process (``multiprocessing``'s
    resource sharer) are not printed — they only happen when the main process was stopped (Ctrl-C, SIGTERM), which
    says so itself."""
    import sys

    shown = sys.excepthook

    def excepthook(kind, value, traceback):
        if not issubclass(kind, ConnectionError):
            shown(kind, value, traceback)

    sys.excepthook = excepthook


@dataclass(frozen=True)
class Engine:
    """The engine loop for one set of settings: ``batch_size`` images per batch, ``num_workers`` preparing them,
    for a model on ``device``, JPEGs draft-decoded with ``fast_decode``. A scorer and a set of scorers each own one."""

    device: torch.device
    batch_size: int
    num_workers: int
    fast_decode: bool = False

    def run(self, images: Iterable[Any] | Dataset, transform, results) -> Iterator[Any]:
        """``images`` prepared by ``transform`` in batches, ``results(batch)`` yielded item by item, in input
        order."""
        if is_single_image(images):
            images = [images]
        window = self.batch_size * max(1, self.num_workers) * 8
        pin = self.device.type == "cuda"
        for sources in source_windows(images, window):
            batches = iter_prepared_batches(
                sources, transform, self.batch_size, self.num_workers, pin, self.fast_decode
            )
            threads = self.model_threads(worker_count(len(sources), self.batch_size, self.num_workers))
            for batch in batches:
                with threads:
                    items = results(batch)
                yield from items

    def model_threads(self, workers: int):
        """On CPU, the model's forward passes leave a core to each worker process (at least one thread stays):
        measured here, oversubscribed cores cost more than the threads gain (benchmarks/RESULTS.md)."""
        if self.device.type != "cpu" or not workers:
            return nullcontext()
        return TorchThreads(max(1, torch.get_num_threads() - workers))


class TorchThreads:
    """torch's intra-op threads set to ``count`` inside each ``with`` block, restored after (reusable)."""

    def __init__(self, count: int):
        self.count, self.before = count, None

    def __enter__(self) -> None:
        self.before = torch.get_num_threads()
        torch.set_num_threads(self.count)

    def __exit__(self, *exc_info) -> None:
        torch.set_num_threads(self.before)


# ----------------------------------------------------------------------------- what callers pass in
class DatasetSources(Sequence):
    """A ``datasets.Dataset``'s rows as sources, read lazily (in the workers): its ``image`` column undecoded (so
    :func:`open_image` applies) and its ``image_name`` column, when present, as the crop key (as in training
    evaluation)."""

    def __init__(self, dataset: Dataset):
        if "image" not in dataset.column_names:
            raise ValueError(f"The dataset has no 'image' column (columns: {dataset.column_names}).")
        dataset = undecoded(dataset)
        self.has_names = "image_name" in dataset.column_names
        self.dataset = dataset.select_columns(["image", "image_name"] if self.has_names else ["image"])

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Source:
        row = self.dataset[index]
        return row["image"], row.get("image_name")


class UnkeyedSources(Sequence):
    """A sequence of images as sources whose crops the pixels seed (read where indexed: lazy sequences stay lazy)."""

    def __init__(self, images: Sequence[Any]):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Source:
        return self.images[index], None


def source_windows(images: Iterable[Any] | Dataset, window: int) -> Iterator[Sequence[Source]]:
    """``images`` as sequences of sources: a Dataset, any sequence (list, tuple, a lazy one) or stacked
    ``(N, H, W, C)`` array whole; any other iterable (a generator) in windows of ``window`` images, so it is never
    read into memory at once."""
    if isinstance(images, Dataset):
        yield DatasetSources(images)
        return
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
        images = list(images)
    if isinstance(images, Sequence) and not isinstance(images, (str, bytes)):
        yield UnkeyedSources(images)
        return
    iterator = iter(images)
    while chunk := list(islice(iterator, window)):
        yield [(image, None) for image in chunk]


def is_single_image(images: Any) -> bool:
    return isinstance(images, (Image.Image, str, os.PathLike, bytes)) or (
        isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim in (2, 3)
    )


def as_image_source(image: Any) -> Any:
    """What :func:`open_image` accepts (an exception in place of an image is raised). Numpy arrays are ``(H, W)``,
    ``(H, W, 1|3|4)`` (torch tensors also ``(1|3|4, H, W)``): integer arrays of any dtype are read by their range
    (0–255: 8 bits, else 0–65535: 16 bits), float and bool arrays hold 0–1; anything else is a ``ValueError`` naming
    the array's dtype, shape and range (never a silently white or black image)."""
    if isinstance(image, BaseException):  # an input known to hold no image (:mod:`.image_sources`)
        raise image
    if isinstance(image, torch.Tensor):
        image = tensor_as_array(image)
    if not isinstance(image, np.ndarray):
        return image
    if image.ndim == 3 and image.shape[-1] not in (1, 3, 4) and image.shape[0] in (1, 3, 4):
        raise ValueError(f"array of shape {image.shape} looks channel-first; pass (H, W, C): array.transpose(1, 2, 0)")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (1, 3, 4)):
        raise ValueError(f"array of shape {image.shape}: expected (H, W) or (H, W, 1|3|4)")
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.size == 0:
        raise ValueError(f"array of shape {image.shape} is empty")
    low, high = (image.min(), image.max()) if image.dtype != bool else (0, 1)
    if np.issubdtype(image.dtype, np.integer) and image.dtype != np.uint8:  # by its range: 8 bits, else 16
        if low < 0 or high > 65535:
            raise ValueError(
                f"{image.dtype} array with values {low}..{high}: integer images hold 0..255 (or 16-bit 0..65535)"
            )
        image = image.astype(np.uint8) if high <= 255 else image.astype(np.float64) / 65535.0
    elif image.dtype == bool:
        image = image.astype(np.float64)
    elif np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all():
            raise ValueError(f"{image.dtype} array contains NaN or infinity")
        if low < 0 or high > 1:
            raise ValueError(
                f"{image.dtype} array with values {low:g}..{high:g}: float images must hold 0..1 "
                "(divide 0..255 values by 255, or pass them as uint8)"
            )
    elif image.dtype != np.uint8:
        raise ValueError(f"array of dtype {image.dtype} is not an image; use uint8 (0..255) or float (0..1)")
    if image.dtype != np.uint8:
        image = (image * 255.0 + 0.5).astype(np.uint8)
    return Image.fromarray(image)


def tensor_as_array(image: torch.Tensor) -> np.ndarray:
    """A torch image tensor as a numpy array ``(H, W[, C])``: channels-first ``(C, H, W)`` moved last (torch's
    convention), values as they are (their range is read as an array's)."""
    image = image.detach().cpu()
    if image.dtype == torch.bfloat16:  # (numpy has no bfloat16)
        image = image.float()
    if image.ndim == 3 and image.shape[0] in (1, 3, 4) and image.shape[-1] not in (1, 3, 4):
        image = image.permute(1, 2, 0)
    return image.numpy()


__all__ = [
    "DatasetSources",
    "PreparedBatch",
    "TransformSet",
    "as_image_source",
    "is_single_image",
    "iter_prepared_batches",
    "prepare_image",
    "source_windows",
    "worker_count",
]
