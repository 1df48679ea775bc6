"""What `perceptclip predict` reads: the inputs its command line names as image sets (:mod:`..image_sources`), in
order, minus what the output already holds, with a tally of what was done and what was not."""

from __future__ import annotations

import argparse
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .common import Collected, UsageError, collect_images, echo


def collect_inputs(args: argparse.Namespace, part: tuple[int, int] = (0, 1)) -> tuple[list, Collected]:
    """The image sets the arguments name, in their order (all Parquet files one table, all file arguments one set;
    ``part``: one process's share of each) and what the file arguments hold that is not scored."""
    from ..scoring.image_sources import ImageSet, hub_dataset_set, input_kind, parquet_set, saved_dataset_set, shard_set

    groups: list[tuple[str, list[str]]] = []
    for argument in args.paths:
        kind = input_kind(argument)
        group = next((arguments for other, arguments in groups if other == kind != "saved"), None)
        if group is None:
            groups.append((kind, [argument]))
        else:
            group.append(argument)
    tables = [kind for kind, _ in groups if kind in ("parquet", "saved")] + (
        ["--hf-dataset"] if args.hf_dataset else []
    )
    if len(tables) > 1 and args.id_column is None:
        raise UsageError(
            f"{len(tables)} tables (Parquet files, save_to_disk folders, --hf-dataset): their row "
            "indexes would name different images alike; pass --id-column NAME"
        )
    if not tables and args.id_column is not None:
        raise UsageError(
            "--id-column names rows of Parquet files, save_to_disk folders or --hf-dataset; files are "
            "named by their path, shard samples by their __key__"
        )
    found, sets = Collected(), []
    for kind, arguments in groups:
        if kind == "files":
            found = collect_images(arguments)
            sets.append(
                ImageSet(" ".join(arguments), ids=found.images, images=found.images, length=len(found.images)).share(
                    part
                )
            )
        elif kind == "shards":
            sets.append(shard_set(arguments, part))
        elif kind == "parquet":
            sets.append(parquet_set(arguments, args.image_column, args.id_column, part))
        else:
            sets.append(saved_dataset_set(arguments[0], args.image_column, args.id_column, args.split, part))
    if args.hf_dataset:
        sets.append(
            hub_dataset_set(args.hf_dataset, args.split, args.streaming, args.image_column, args.id_column, part)
        )
    return sets, found


def report_not_scored(not_scored: list[tuple[str, str]], shown: int = 20) -> None:
    for path, reason in not_scored[:shown]:
        echo(f"not scored: {path}: {reason}")
    if len(not_scored) > shown:
        echo(f"not scored: ... and {len(not_scored) - shown} more (all listed in the output's .meta.json)")


@dataclass
class Tally:
    """What a run did with its inputs."""

    scored: int = 0
    failed: int = 0
    skipped: int = 0  # already in the output
    failed_before: int = 0  # of the skipped: rows holding an error
    not_scored: list[tuple[str, str]] = field(default_factory=list)  # (input, why), found while reading


def predictions(models, image_sets, previous, tally: Tally) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(id, result)`` for every input not already in the output, set after set, in order. A random-access set
    goes to the models as lazy sequences (its workers read it); a stream is read here, its ids kept in order."""
    from ..scoring.image_sources import Subset
    from ..scoring.score_files import input_key

    already = previous.done | previous.failed
    seen: set[str] = set()

    def fresh(id_: str) -> bool:
        key = input_key(id_)
        if key in already:
            tally.skipped += 1
            tally.failed_before += key in previous.failed
            return False
        if key in seen:
            tally.not_scored.append((id_, "duplicate id (an earlier input has it)"))
            return False
        seen.add(key)
        return True

    for image_set in image_sets:
        if image_set.stream is None:
            ids, images = image_set.ids, image_set.images
            keep = [index for index, id_ in enumerate(ids) if fresh(id_)]
            if len(keep) < len(ids):
                ids, images = Subset(ids, keep), Subset(images, keep)
            yield from zip(ids, models.iter_predictions(images, on_error="record"))
            continue
        pending: deque[str] = deque()

        def images(stream=image_set.stream, pending=pending) -> Iterator[Any]:
            for id_, image in stream():
                if fresh(id_):
                    pending.append(id_)
                    yield image

        for result in models.iter_predictions(images(), on_error="record"):
            yield pending.popleft(), result
        for problem in image_set.problems:
            echo(f"not scored: {problem[0]}: {problem[1]}")
        tally.not_scored.extend(image_set.problems)


def reasons(not_scored: list[tuple[str, str]]) -> str:
    """``"2 not an image, 1 same file as another path"``."""
    return Collected(not_scored=not_scored).reasons()
