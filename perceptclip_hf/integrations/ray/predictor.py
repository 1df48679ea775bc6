"""PerceptCLIP as a Ray Data callable class: the model loads once per actor, each batch of images comes back as
``perceptclip predict``'s rows.

    >>> images = ray.data.read_binary_files("photos/", include_paths=True)
    >>> scores = images.map_batches(
    ...     PerceptCLIPPredictor,
    ...     fn_constructor_kwargs={"models": {"quality": "quality", "emotion": "emotion"}, "tta": 15},
    ...     batch_size=16, concurrency=2, num_gpus=1)   # one actor per GPU; on CPU: num_cpus
    >>> scores.write_parquet("scores/")

Batches are read as Ray's readers give them: ``read_binary_files(..., include_paths=True)`` (``bytes``, ``path``),
``read_images(..., include_paths=True)`` (``image`` arrays, ``path``), ``read_parquet`` (an image column of bytes or
``datasets`` Image structs; ``id_column`` names the rows) and ``read_webdataset`` (``__key__`` and a ``jpg`` /
``jpeg`` / ``png`` / ``webp`` entry, decoded or raw; Ray's own decoders fail the job on an unreadable image, raw
bytes become an error row). The rows hold exactly the columns ``perceptclip predict`` writes
(:func:`perceptclip_hf.scoring.score_rows.result_columns`: ``id`` first; one model's unprefixed, several prefixed with
their names; ``error``), with one Arrow type each; an image that cannot be read is a row with its ``error``. Decoding
and the test crops are the package's own (:mod:`perceptclip_hf.preprocessing`), so the scores are the local engine's.
Batches that :mod:`.reading` prepared (``pixels_<k>`` columns: decoded and cropped in Ray tasks) go straight to
the models.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ID_COLUMNS = ("id", "path", "__key__")  # ours / read_binary_files, read_images / read_webdataset
IMAGE_COLUMNS = ("bytes", "image", "jpg", "jpeg", "png", "webp")
PIXELS = "pixels_"  # prepared pixels, one column per distinct test transform (:mod:`.reading`)
READ_ERROR = "read_error"  # why :mod:`.reading` could not read an input ("" when it could)
TEXT_COLUMNS = ("id", "label", "score_scale", "error")


class PerceptCLIPPredictor:
    """Scores Ray Data batches (see the module docstring). ``models``: one model (a folder, Hub id or alias, as
    ``--model`` takes) or ``{name: model}``; ``tta``, ``seed``, ``batch_size`` (images per forward pass),
    ``device``, ``dtype``, ``backend`` and ``fast_decode`` as :class:`~perceptclip_hf.scoring.PerceptScorer`'s;
    ``base_model``: a local copy of the base backbone; ``task``: an official one-output ``.pth``'s. ``id_column`` /
    ``image_column`` name the batch's columns when they are not Ray's readers' own."""

    def __init__(
        self,
        models: Any,
        *,
        tta: int | None = None,
        seed: int = 0,
        batch_size: int | None = None,
        device: str | None = None,
        dtype: str | None = None,
        backend: str = "torch",
        fast_decode: bool = False,
        base_model: str | None = None,
        task: str | None = None,
        id_column: str | None = None,
        image_column: str | None = None,
    ):
        from ...hub.source import named_sources
        from ...scoring.model_set import ScorerSet

        self.scorers = ScorerSet.from_pretrained(
            named_sources(models, task),
            load_kwargs={"base_model_name_or_path": base_model} if base_model else None,
            device=device,
            dtype=dtype,
            backend=backend,
            tta=tta,
            seed=seed,
            batch_size=batch_size,
            num_workers=0,  # Ray runs the batches in parallel; each actor prepares its own
            fast_decode=fast_decode,
        )
        self.schema = result_schema(self.scorers)
        self.id_column, self.image_column = id_column, image_column
        use_ray_cpus()

    def __call__(self, batch: Any):
        """A batch (a dict of columns, Ray's default; a ``pyarrow.Table`` or a ``pandas.DataFrame``) → a
        ``pyarrow.Table`` of result rows, in order."""
        import pyarrow as pa

        from ...scoring.score_formats import csv_row
        from ...scoring.score_rows import result_row

        batch = as_columns(batch)
        ids = [str(value) for value in batch[column_named(batch, self.id_column, ID_COLUMNS, "id")]]
        if f"{PIXELS}0" in batch:
            results = prepared_results(self.scorers, batch)
        else:
            column = column_named(batch, self.image_column, IMAGE_COLUMNS, "image")
            images = [image_source(value, column, id_) for value, id_ in zip(batch[column], ids)]
            results = self.scorers.iter_predictions(images, on_error="record")
        rows = [csv_row(result_row(self.scorers, id_, result)) for id_, result in zip(ids, results)]
        return pa.Table.from_pylist(rows, schema=self.schema)


def use_ray_cpus() -> None:
    """In a Ray actor, torch's threads are the CPUs Ray gave it (at least one)."""
    try:
        import ray
        import torch

        if ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE:
            torch.set_num_threads(max(1, round(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
    except ImportError:
        pass


def as_columns(batch: Any) -> dict[str, Any]:
    """A batch of any of Ray's formats as a dict of columns."""
    if isinstance(batch, dict):
        return batch
    if hasattr(batch, "column_names"):  # pyarrow.Table
        return {name: batch.column(name).to_pylist() for name in batch.column_names}
    return {name: batch[name].to_numpy() for name in batch.columns}  # pandas.DataFrame


def column_named(batch: dict[str, Any], given: str | None, known: tuple[str, ...], what: str) -> str:
    """The batch column holding the ``what`` (``given``, else the first of Ray's readers' names it has)."""
    if given is not None:
        if given not in batch:
            raise ValueError(f"{what}_column={given!r}: the batch has no such column (columns: {sorted(batch)})")
        return given
    found = next((name for name in known if name in batch), None)
    if found is None:
        fix = "read with include_paths=True, or pass id_column=NAME" if what == "id" else "pass image_column=NAME"
        raise ValueError(f"no {what} column in the batch (columns: {sorted(batch)}; looked for {known}): {fix}")
    return found


def image_source(value: Any, column: str, id_: str) -> Any:
    """A batch cell as what the input engine opens: bytes (named by the row's id in errors), a ``{"bytes",
    "path"}`` struct, a decoded array, a path; an empty cell is an error row."""
    if value is None:
        return ValueError(f"{id_}: no image in column {column!r}")
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": bytes(value), "path": id_}
    if isinstance(value, np.ndarray) and value.dtype == object:  # a nested list Arrow handed over as objects
        value = np.stack(value)
    return value


def prepared_results(scorers, batch: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """The results of a batch :mod:`.reading` prepared: ``pixels_<k>`` holds the uint8 pixels of transform ``k``
    (zeros where ``read_error`` says why an image could not be read)."""
    import torch

    from ...data.errors import DatasetFormatError
    from ...scoring.input_pipeline import PreparedBatch
    from ...scoring.scorer import batch_results

    errors = [str(error) for error in batch[READ_ERROR]]
    ok = [index for index, error in enumerate(errors) if not error]
    pixels = [torch.from_numpy(np.ascontiguousarray(batch[f"{PIXELS}{slot}"][ok])) for slot in range(count(batch))]
    failed = {index: DatasetFormatError(error) for index, error in enumerate(errors) if error}
    prepared = PreparedBatch(len(errors), pixels if ok else None, ok, failed)
    return batch_results(prepared, "record", scorers.predict)


def count(batch: dict[str, Any]) -> int:
    return sum(1 for name in batch if name.startswith(PIXELS))


def result_schema(scorers):
    """The Arrow schema of the result rows: text ids, labels, scales and errors; ``higher_is_better`` a bool; the
    rest (scores, their range, probabilities) float64."""
    import pyarrow as pa

    from ...scoring.score_rows import column_prefixes, model_columns

    fields = [pa.field("id", pa.string())]
    for scorer, prefix in zip(scorers.scorers.values(), column_prefixes(scorers).values()):
        for column in model_columns(scorer):
            kind = (
                pa.string() if column in TEXT_COLUMNS else pa.bool_() if column == "higher_is_better" else pa.float64()
            )
            fields.append(pa.field(prefix + column, kind))
    return pa.schema([*fields, pa.field("error", pa.string())])


__all__ = ["PerceptCLIPPredictor", "result_schema"]
