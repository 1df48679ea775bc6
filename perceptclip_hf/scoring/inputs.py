"""What a scoring job reads: the inputs it is given (files, folders, globs, shards, Parquet files, ``save_to_disk``
folders, a ``datasets`` dataset) as image sets (:mod:`.image_sources`), in order, minus what the output already
holds, with a tally of what was done and what was not."""

from __future__ import annotations

import glob
import logging
import os
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigurationError, InputError
from .image_sources import (
    DUPLICATE_ID,
    GLOB_CHARS,
    ImageSet,
    Subset,
    hub_dataset_set,
    input_kind,
    parquet_set,
    saved_dataset_set,
    shard_set,
)
from .score_files import Previous, input_key
from .score_rows import row_id

Report = Callable[[str], None]
NAMED_TWICE = "named more than once (scored once)"
logger = logging.getLogger(__name__)  # where messages for the user go when no `report` is given


@dataclass
class Collected:
    """The images a command line names, and everything it found but will not score (with the reason)."""

    images: list[str] = field(default_factory=list)  # absolute paths, one per real file
    not_scored: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def reasons(self) -> str:
        """``"2 not an image, 1 same file as another path"``."""
        counts = Counter(
            "same file as another path" if reason.startswith("same file as ") else reason
            for _, reason in self.not_scored
        )
        return ", ".join(f"{n} {reason}" for reason, n in counts.most_common())


def collect_images(arguments: Sequence[str], report: Report | None = None) -> Collected:
    """Files (scored whatever their extension), folders (recursive, symlinked folders once, images by extension or
    content) and globs → absolute image paths in order, one per real file; the rest is counted with its reason.
    A path met twice is scored once; another path to the same file is reported as such."""
    from ..data.files import NOT_AN_IMAGE, VISITED_FOLDER, is_image_file, link_problem, walk_images

    found, paths, walked = Collected(), [], []

    def walk(folder: str) -> None:
        real = os.path.realpath(folder)
        if any(real == root or real.startswith(root + os.sep) for root in walked):
            return  # a glob's sub-folder of a folder already walked
        walked.append(real)
        result = walk_images(folder)
        paths.extend(result.images)
        found.not_scored.extend((os.path.abspath(path), reason) for path, reason in result.not_scored)

    for argument in arguments:
        if os.path.isdir(argument):
            walk(argument)
        elif os.path.isfile(argument):
            paths.append(argument)
        elif GLOB_CHARS.search(argument):
            matches = sorted(glob.glob(argument, recursive=True))
            if not matches:
                (report or logger.warning)(f"warning: {argument!r} matches no file")
            for match in matches:
                loop = loop_entry(match)
                if loop:  # `**` follows symlinks: paths through a loop repeat what was found
                    found.not_scored.append((loop, VISITED_FOLDER))
                elif os.path.isdir(match):
                    walk(match)
                elif is_image_file(match):
                    paths.append(match)
                else:
                    found.not_scored.append((os.path.abspath(match), NOT_AN_IMAGE))
        else:
            problem = link_problem(argument)
            raise InputError(
                f"{argument}: {problem}; fix the link or leave it out"
                if problem
                else f"{argument}: no such file or directory"
            )
    first_of: dict[str, str] = {}
    for path in map(os.path.abspath, paths):
        real = os.path.realpath(path)
        if real not in first_of:
            first_of[real] = path
            found.images.append(path)
        else:
            found.not_scored.append((path, f"same file as {first_of[real]}" if path != first_of[real] else NAMED_TWICE))
    found.not_scored = list(dict.fromkeys(found.not_scored))
    return found


def loop_entry(path: str) -> str | None:
    """The first folder on ``path`` that leads back to a folder before it on the path (a symlink loop), if any."""
    seen: set[str] = set()
    prefix = os.path.abspath(path)
    parts = prefix.split(os.sep)
    for end in range(2, len(parts) + 1):
        prefix = os.sep.join(parts[:end])
        real = os.path.realpath(prefix)
        if real in seen:
            return prefix
        seen.add(real)
    return None


def collect_inputs(
    paths: Sequence[str],
    *,
    hf_dataset: str | None = None,
    split: str | None = None,
    streaming: bool = False,
    image_column: str = "image",
    id_column: str | None = None,
    part: tuple[int, int] = (0, 1),
    report: Report | None = None,
) -> tuple[list[ImageSet], Collected]:
    """The image sets ``paths`` and ``hf_dataset`` name, in their order (all Parquet files one table, all file
    arguments one set; ``part``: one process's share of each) and what the file arguments hold that is not scored."""
    groups: list[tuple[str, list[str]]] = []
    for argument in paths:
        kind = input_kind(argument)
        group = next((arguments for other, arguments in groups if other == kind != "saved"), None)
        if group is None:
            groups.append((kind, [argument]))
        else:
            group.append(argument)
    tables = [kind for kind, _ in groups if kind in ("parquet", "saved")] + (["--hf-dataset"] if hf_dataset else [])
    if len(tables) > 1 and id_column is None:
        raise ConfigurationError(
            f"{len(tables)} tables (Parquet files, save_to_disk folders, --hf-dataset): their row "
            "indexes would name different images alike; pass --id-column NAME"
        )
    if not tables and id_column is not None:
        raise ConfigurationError(
            "--id-column names rows of Parquet files, save_to_disk folders or --hf-dataset; files are "
            "named by their path, shard samples by their __key__"
        )
    found, sets = Collected(), []
    for kind, arguments in groups:
        if kind == "files":
            found = collect_images(arguments, report)
            sets.append(
                ImageSet(" ".join(arguments), ids=found.images, images=found.images, length=len(found.images)).share(
                    part
                )
            )
        elif kind == "shards":
            sets.append(shard_set(arguments, part))
        elif kind == "parquet":
            sets.append(parquet_set(arguments, image_column, id_column, part))
        else:
            sets.append(saved_dataset_set(arguments[0], image_column, id_column, split, part))
    if hf_dataset:
        sets.append(hub_dataset_set(hf_dataset, split, streaming, image_column, id_column, part))
    return sets, found


@dataclass
class Tally:
    """What a run did with its inputs."""

    scored: int = 0
    failed: int = 0
    skipped: int = 0  # already in the output
    failed_before: int = 0  # of the skipped: rows holding an error
    not_scored: list[tuple[str, str]] = field(default_factory=list)  # (input, why), found while reading


def predictions(
    models, image_sets: list[ImageSet], previous: Previous, tally: Tally, report: Report | None = None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(id, result)`` for every input not already in the output, set after set, in order. A random-access set
    goes to the models as lazy sequences (its workers read it); a stream is read here, its ids kept in order."""
    already = previous.done | previous.failed
    seen: set[str] = set()

    def fresh(id_: str) -> bool:
        key = input_key(id_)
        if key in seen:  # (first: a repeat is one, whether its first is done or not)
            tally.not_scored.append((id_, DUPLICATE_ID))
            return False
        seen.add(key)
        if key in already:
            tally.skipped += 1
            tally.failed_before += key in previous.failed
            return False
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
            (report or logger.warning)(f"not scored: {problem[0]}: {problem[1]}")
        tally.not_scored.extend(image_set.problems)


def reasons(not_scored: list[tuple[str, str]]) -> str:
    """``"2 not an image, 1 same file as another path"``."""
    return Collected(not_scored=not_scored).reasons()


def report_not_scored(not_scored: list[tuple[str, str]], report: Report | None = None, shown: int = 20) -> None:
    for path, reason in not_scored[:shown]:
        (report or logger.warning)(row_id(f"not scored: {path}: {reason}"))
    if len(not_scored) > shown:
        (report or logger.warning)(
            f"not scored: ... and {len(not_scored) - shown} more (all listed in the output's .meta.json)"
        )


__all__ = ["Collected", "Tally", "collect_images", "collect_inputs", "predictions", "reasons", "report_not_scored"]
