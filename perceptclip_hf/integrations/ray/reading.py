"""The read tasks of :func:`..job.score_with_ray`: each task takes one unit of the inputs, reads it with the
package's own readers (:mod:`perceptclip_hf.scoring.image_sources`), leaves out what the output already holds, and
decodes and crops each image (:func:`perceptclip_hf.scoring.input_pipeline.prepare_image`) into uint8 pixels for
the model actors, so decoding scales with the CPUs of the cluster and the actors only run the models.

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

from .predictor import PIXELS

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


def prepared_rows(
    batch: dict[str, np.ndarray], *, transforms, fast_decode: bool, previous, tally, rows_per_block: int
) -> Iterator[dict[str, np.ndarray]]:
    """The read task (``map_batches`` over the units, one at a time): blocks of ``rows_per_block`` prepared rows —
    ``id``, ``error`` (the reason an image cannot be read, else ``""``: a text column whatever a block holds) and
    ``pixels_<k>`` (zeros on an error row). ``previous``: ``(done, failed)`` input keys of the output (an object
    reference), left out and counted."""
    from ...scoring.image_sources import DUPLICATE_ID
    from ...scoring.input_pipeline import prepare_image
    from ...scoring.score_files import input_key
    from ...scoring.scorer import error_message

    done, failed = ray.get(previous) if isinstance(previous, ray.ObjectRef) else previous
    blank = [np.zeros_like(pixels.numpy()) for pixels in transforms.pixels(Image.new("RGB", (64, 64)), None)]
    for text in batch["unit"]:
        problems: list[tuple[str, str]] = []
        seen: set[str] = set()
        skipped = failed_before = 0
        ids, errors, pixels = [], [], [[] for _ in blank]
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
            try:
                prepared, error = (
                    [tensor.numpy() for tensor in prepare_image(transforms, image, None, fast_decode)],
                    "",
                )
            except Exception as err:  # an unreadable image is a row with its reason
                prepared, error = blank, error_message(err)
            ids.append(id_)
            errors.append(error)
            for slot, array in enumerate(prepared):
                pixels[slot].append(array)
            if len(ids) == rows_per_block:
                yield block(ids, errors, pixels)
                ids, errors, pixels = [], [], [[] for _ in blank]
        if ids:
            yield block(ids, errors, pixels)
        tally.add.remote(skipped, failed_before, problems)


def block(ids: list[str], errors: list[str], pixels: list[list[np.ndarray]]) -> dict[str, np.ndarray]:
    columns = {"id": np.array(ids, dtype=object), "error": np.array(errors, dtype=object)}  # (text: "" is none)
    columns.update({f"{PIXELS}{slot}": np.stack(arrays) for slot, arrays in enumerate(pixels)})
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


__all__ = ["RunTally", "file_units", "prepared_rows", "share_units"]
