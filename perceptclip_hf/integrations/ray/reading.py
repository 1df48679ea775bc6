"""The read tasks of :func:`..job.score_with_ray`: each task takes one unit of the inputs, reads it with the
package's own readers (:mod:`perceptclip_hf.scoring.image_sources`), leaves out what the output already holds, and
decodes and crops each image (:func:`perceptclip_hf.scoring.input_pipeline.prepare_image`) into uint8 pixels for
the model actors, so decoding scales with the CPUs of the cluster and the actors only run the models (measured on 2
CPUs, this beat actors that decode their own images: benchmarks/RESULTS.md).

A unit is the paths of some image files (the driver walked the folders once, as the local engine does), or one
share of the other inputs (shards, Parquet files, ``save_to_disk`` folders, ``--hf-dataset``: ``part = (i, n)``,
split as among the processes of ``accelerate launch``: by shard, by row group, by index). What a task skips, the
repeated ids and the inputs it could not read (a damaged shard) are told to a :class:`RunTally` actor.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import ray
from PIL import Image

from .predictor import PIXELS, READ_ERROR

FILES_PER_UNIT = 16  # (a read task's share: small enough that rows stream to the actors and the files)


def file_units(paths: list[str]) -> list[dict[str, str]]:
    """Units of image files, ``FILES_PER_UNIT`` each."""
    return [unit({"files": paths[start : start + FILES_PER_UNIT]}) for start in range(0, len(paths), FILES_PER_UNIT)]


def share_units(arguments: list[str], parts: int, **tables: Any) -> list[dict[str, str]]:
    """``parts`` units sharing the inputs that are not files (``tables``: hf_dataset, split, streaming, image_column,
    id_column, as :func:`perceptclip_hf.scoring.inputs.collect_inputs` takes them)."""
    return [unit({"arguments": arguments, "part": [index, parts], **tables}) for index in range(parts)]


def unit(content: dict[str, Any]) -> dict[str, str]:
    """A row of the units dataset: its content as JSON (one opaque column; file names that are not UTF-8 survive as
    escaped surrogates)."""
    return {"unit": json.dumps(content)}


def unit_images(content: dict[str, Any], problems: list[tuple[str, str]]) -> Iterator[tuple[str, Any]]:
    """A unit's ``(id, image)`` pairs in order; what a stream could not read is added to ``problems``."""
    if "files" in content:
        for path in content["files"]:
            yield path, path
        return
    from ...scoring.inputs import collect_inputs

    tables = {key: content[key] for key in ("hf_dataset", "split", "streaming", "image_column", "id_column")}
    image_sets, _ = collect_inputs(content["arguments"], part=tuple(content["part"]), **tables)
    for image_set in image_sets:
        if image_set.stream is None:
            yield from zip(image_set.ids, image_set.images)
        else:
            yield from image_set.stream()
            problems.extend(image_set.problems)


def read_rows(
    batch: dict[str, np.ndarray], *, transforms, fast_decode: bool, previous, tally, rows_per_block: int
) -> Iterator[dict[str, np.ndarray]]:
    """The read task (``map_batches`` over the units, one at a time): blocks of ``rows_per_block`` rows — ``id``,
    ``read_error`` (why an image cannot be read, else ``""``) and ``pixels_<k>``, the image decoded and cropped by
    test transform ``k`` of ``transforms`` (zeros on an error row). ``previous``: ``(done, failed)`` input keys of
    the output (an object reference), left out and counted."""
    from ...scoring.image_sources import DUPLICATE_ID
    from ...scoring.score_files import input_key

    done, failed = ray.get(previous) if isinstance(previous, ray.ObjectRef) else previous
    blank = [np.zeros_like(pixels.numpy()) for pixels in transforms.pixels(Image.new("RGB", (64, 64)), None)]
    for text in batch["unit"]:
        problems: list[tuple[str, str]] = []
        seen: set[str] = set()
        skipped = failed_before = 0
        rows: list[tuple[str, Any]] = []
        for id_, image in unit_images(json.loads(text), problems):
            key = input_key(id_)
            if key in seen:
                problems.append((id_, DUPLICATE_ID))
                continue
            seen.add(key)
            if key in done:
                skipped += 1
                failed_before += key in failed
                continue
            rows.append((id_, image))
            if len(rows) == rows_per_block:
                yield block(rows, transforms, blank, fast_decode)
                rows = []
        if rows:
            yield block(rows, transforms, blank, fast_decode)
        tally.add.remote(skipped, failed_before, problems)


def block(rows: list[tuple[str, Any]], transforms, blank: list[np.ndarray], fast_decode: bool) -> dict[str, Any]:
    """A block of rows, each image decoded and cropped (see :func:`read_rows`)."""
    from ...scoring.input_pipeline import prepare_image
    from ...scoring.scorer import error_message

    errors, pixels = [], []
    for _, image in rows:
        try:
            pixels.append([tensor.numpy() for tensor in prepare_image(transforms, image, None, fast_decode)])
            errors.append("")
        except Exception as err:  # an unreadable image is a row with its reason
            pixels.append(blank)
            errors.append(error_message(err))
    columns = {"id": np.array([id_ for id_, _ in rows], dtype=object), READ_ERROR: np.array(errors, dtype=object)}
    columns.update({f"{PIXELS}{slot}": np.stack([cell[slot] for cell in pixels]) for slot in range(len(blank))})
    return columns


@ray.remote(num_cpus=0)
class RunTally:
    """What the read tasks left out: inputs already in the output (``failed_before`` of them error rows) and inputs
    not scored, with the reason."""

    def __init__(self):
        self.skipped, self.failed_before, self.not_scored = 0, 0, []

    def add(self, skipped: int, failed_before: int, not_scored: list[tuple[str, str]]) -> None:
        self.skipped += skipped
        self.failed_before += failed_before
        self.not_scored.extend(not_scored)

    def totals(self) -> tuple[int, int, list[tuple[str, str]]]:
        return self.skipped, self.failed_before, self.not_scored


__all__ = ["RunTally", "file_units", "read_rows", "share_units"]
