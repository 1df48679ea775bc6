"""Where the images to score come from: each input a scoring run names, as an :class:`ImageSet` of ``(id, image)``.

- image files, folders and globs (the command line walks them, :func:`.inputs.collect_images`): id = the
  absolute path;
- WebDataset tar shards (``shards/{000000..000099}.tar``, ``.tar.gz``, brace and glob patterns), read in order with the
  ``webdataset`` library: one image per sample, its ``jpg`` / ``jpeg`` / ``png`` / ``webp`` entry; id = ``__key__``;
- Parquet files and ``save_to_disk`` folders with an image column (a ``datasets`` ``Image`` column, or raw bytes);
- a dataset ``datasets.load_dataset`` reads (a Hub id, or a local dataset folder), whole or streamed.

Table rows are identified by ``id_column`` when given, else by their row index (counted over all the Parquet files
of a run, in order). Nothing is decoded here: the sets with random access (files, ``save_to_disk`` and Hub datasets
not streamed) are read by the input engine's workers, the others (shards, Parquet, streams) are read once in order
and their bytes handed to the workers. An entry that holds no image (a sample without an image entry, an empty
cell) is an exception in place of its image, so it becomes an error row with its id.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..data.errors import DatasetFormatError
from ..errors import InputError, is_offline_error, one_line

SHARD_IMAGE_ENTRIES = ("jpg", "jpeg", "png", "webp")
SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")  # webdataset reads a gzipped tar as it streams
DUPLICATE_ID = "duplicate id (an earlier input has it)"
SAVED_DATASET_FILES = ("state.json", "dataset_dict.json")  # what Dataset / DatasetDict.save_to_disk write
GLOB_CHARS = re.compile(r"[*?\[]")
PARQUET_BATCH_ROWS = 256


Part = tuple[int, int]  # (this process, processes): the share of the inputs one scoring process takes
WHOLE: Part = (0, 1)


def block(count: int, part: Part) -> range:
    """Process ``part[0]``'s contiguous share of ``count`` units, out of ``part[1]`` shares differing by at most one."""
    index, parts = part
    return range(count * index // parts, count * (index + 1) // parts)


@dataclass
class ImageSet:
    """One input of a scoring run. Random access: ``ids[i]`` names ``images[i]`` (both read lazily); else
    ``stream()`` yields the ``(id, image)`` pairs once, in order, and records in ``problems`` what it could not read
    (``(what, why)``, e.g. a damaged shard)."""

    name: str
    ids: Sequence[str] | None = None
    images: Sequence[Any] | None = None
    stream: Callable[[], Iterator[tuple[str, Any]]] | None = None
    length: int | None = None  # None: unknown before the stream is read
    problems: list[tuple[str, str]] = field(default_factory=list)

    def share(self, part: Part) -> ImageSet:
        """A random-access set's contiguous share for one process of several (streams are split where they are
        read: by shard, by Parquet row group)."""
        if part == WHOLE or self.stream is not None:
            return self
        rows = block(len(self.ids), part)
        return ImageSet(self.name, ids=Subset(self.ids, rows), images=Subset(self.images, rows), length=len(rows))


# ----------------------------------------------------------------------------- what each argument is
def input_kind(argument: str) -> str:
    """``"shards"`` (``.tar``, ``.tar.gz``, ``.tgz``), ``"parquet"``, ``"saved"`` (a ``save_to_disk`` folder) or
    ``"files"`` (image files, folders, globs), from the argument's text (patterns are expanded later)."""
    text = argument.lower()
    if text.endswith(SHARD_SUFFIXES):
        return "shards"
    if text.endswith(".parquet"):
        return "parquet"
    if os.path.isdir(argument) and any(os.path.isfile(os.path.join(argument, name)) for name in SAVED_DATASET_FILES):
        return "saved"
    return "files"


def expand_pattern(pattern: str) -> list[str]:
    """The files a shard / Parquet argument names: braces (``{000..099}``, ``{a,b}``) then globs; every file a brace
    names must exist."""
    from braceexpand import braceexpand

    paths: list[str] = []
    for expanded in braceexpand(pattern):
        if GLOB_CHARS.search(expanded):
            matches = sorted(glob.glob(expanded))
            if not matches:
                raise InputError(f"{pattern}: {expanded!r} matches no file")
            paths.extend(matches)
        elif not os.path.isfile(expanded):
            raise InputError(
                f"{pattern}: {expanded} does not exist"
                + ("" if expanded == pattern else " (named by the pattern); fix the range or the folder")
            )
        else:
            paths.append(expanded)
    return list(dict.fromkeys(paths))


# ----------------------------------------------------------------------------- WebDataset shards
def shard_set(patterns: Sequence[str], part: Part = WHOLE) -> ImageSet:
    """The samples of the tar shards the patterns name (``part``: a process's contiguous share of the shards), in
    order; id = ``__key__``. A shard that cannot be read to its end is a problem of the set (its remaining samples
    are not scored); a sample without an image entry is an error row."""
    from webdataset.tariterators import base_plus_ext, group_by_keys, tar_file_iterator

    shards = [path for pattern in patterns for path in expand_pattern(pattern)]
    shards = [shards[index] for index in block(len(shards), part)]
    image_set = ImageSet(", ".join(patterns))

    def files(shard: str) -> Iterator[dict[str, Any]]:
        def stop(err: Exception) -> bool:  # a member that cannot be read: the rest of the shard neither
            raise err

        try:
            with open(shard, "rb") as handle:
                for entry in tar_file_iterator(handle, handler=stop):
                    yield {**entry, "__url__": shard}
        except Exception as err:  # tarfile.ReadError, OSError, ...
            reason = str(err.args[0]).split(" @ ")[0] if err.args else type(err).__name__
            image_set.problems.append((shard, f"cannot be read further ({one_line(reason, 200)})"))

    def repeated(err: Exception) -> bool:  # a member named as the one before it: its sample's id again
        if not (isinstance(err, ValueError) and "duplicate file name" in str(err.args[0])):
            raise err
        image_set.problems.append((base_plus_ext(str(err.args[0]).split(": ")[0])[0], DUPLICATE_ID))
        return True

    def stream() -> Iterator[tuple[str, Any]]:
        for shard in shards:
            for sample in group_by_keys(files(shard), handler=repeated):
                key = sample["__key__"]
                entry = next((name for name in SHARD_IMAGE_ENTRIES if name in sample), None)
                if entry is None:
                    entries = sorted(name for name in sample if not name.startswith("__"))
                    yield (
                        key,
                        DatasetFormatError(
                            f"{shard}: sample {key} has no image entry "
                            f"({'/'.join(SHARD_IMAGE_ENTRIES)}; it has {', '.join(entries)})"
                        ),
                    )
                else:
                    yield key, sample[entry]

    image_set.stream = stream
    return image_set


# ----------------------------------------------------------------------------- tables
def parquet_set(
    patterns: Sequence[str], image_column: str = "image", id_column: str | None = None, part: Part = WHOLE
) -> ImageSet:
    """The rows of the Parquet files the patterns name (in order, one table), read a row group at a time
    (``part``: a process's contiguous share of the row groups)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = [path for pattern in patterns for path in expand_pattern(pattern)]
    groups: list[tuple[str, int, int, int]] = []  # (file, row group, its first row in the table, its rows)
    for path in files:
        try:
            parquet = pq.ParquetFile(path)
        except Exception as err:  # pyarrow raises ArrowInvalid, OSError, ...
            raise InputError(f"{path}: cannot read it as Parquet ({one_line(err, 200)})") from None
        schema = parquet.schema_arrow
        check_columns(path, schema.names, image_column, id_column)
        kind = schema.field(image_column).type
        if not (
            pa.types.is_binary(kind)
            or pa.types.is_large_binary(kind)
            or (pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0)
        ):
            raise InputError(
                f"{path}: column {image_column!r} holds {kind}, not images (a datasets Image column or "
                "encoded bytes); pass --image-column NAME"
            )
        for group in range(parquet.metadata.num_row_groups):
            first = groups[-1][2] + groups[-1][3] if groups else 0
            groups.append((path, group, first, parquet.metadata.row_group(group).num_rows))
    groups = [groups[index] for index in block(len(groups), part)]

    def stream() -> Iterator[tuple[str, Any]]:
        columns = list(dict.fromkeys(column for column in (image_column, id_column) if column))
        for path, group, row, _ in groups:
            batches = pq.ParquetFile(path).iter_batches(
                batch_size=PARQUET_BATCH_ROWS, row_groups=[group], columns=columns
            )
            for batch in batches:
                images = batch.column(image_column).to_pylist()
                ids = batch.column(id_column).to_pylist() if id_column else range(row, row + len(images))
                for offset, (id_, image) in enumerate(zip(ids, images)):
                    yield str(id_), cell_image(image, f"{path}: row {row + offset}")
                row += len(images)

    return ImageSet(", ".join(patterns), stream=stream, length=sum(group[3] for group in groups))


def saved_dataset_set(
    folder: str, image_column: str = "image", id_column: str | None = None, split: str | None = None, part: Part = WHOLE
) -> ImageSet:
    """The rows of a ``save_to_disk`` folder (a ``DatasetDict``'s ``split``), read lazily by the workers."""
    from datasets import load_from_disk

    try:
        dataset = load_from_disk(folder)
    except Exception as err:
        raise InputError(f"{folder}: cannot load it as a save_to_disk dataset ({one_line(err, 200)})") from None
    return table_set(choose_split(dataset, split, folder), folder, image_column, id_column).share(part)


def hub_dataset_set(
    name: str,
    split: str | None = None,
    streaming: bool = False,
    image_column: str = "image",
    id_column: str | None = None,
    part: Part = WHOLE,
) -> ImageSet:
    """A dataset ``datasets.load_dataset`` reads (Hub id or local folder), its ``split``; streamed: read once
    (``part``: a process's share, by shard where the shards divide evenly, ``split_dataset_by_node``)."""
    from datasets import load_dataset
    from huggingface_hub.utils import logging as hub_logging

    verbosity = hub_logging.get_verbosity()
    hub_logging.set_verbosity_error()  # an unreachable Hub is one line below, not a warning per retry
    try:
        dataset = load_dataset(name, split=split, streaming=streaming)
    except Exception as err:
        if is_offline_error(err) and not os.path.exists(name):
            raise InputError(
                f"--hf-dataset {name}: cannot reach the Hugging Face Hub and there is no cached copy; "
                f"on a machine with Hub access run `hf download {name} --repo-type dataset --local-dir "
                "DIR`, copy DIR here and pass --hf-dataset DIR"
            ) from None
        raise InputError(
            f"--hf-dataset {name}"
            + (f" --split {split}" if split else "")
            + f": cannot load it ({type(err).__name__}: {one_line(err, 300)})"
        ) from None
    finally:
        hub_logging.set_verbosity(verbosity)
    dataset = choose_split(dataset, split, f"--hf-dataset {name}")
    if not streaming:
        return table_set(dataset, name, image_column, id_column).share(part)
    if part != WHOLE:
        from datasets.distributed import split_dataset_by_node

        if id_column is None:
            raise InputError(
                f"--hf-dataset {name} --streaming in {part[1]} processes: each would count rows from 0; "
                "pass --id-column NAME"
            )
        dataset = split_dataset_by_node(dataset, rank=part[0], world_size=part[1])
    return streamed_set(dataset, name, image_column, id_column)


def choose_split(dataset, split: str | None, where: str):
    """A ``Dataset`` from a ``DatasetDict`` (or its iterable twin): ``split``, or its only split."""
    if not hasattr(dataset, "keys"):
        return dataset
    splits = list(dataset.keys())
    if split is None and len(splits) == 1:
        split = splits[0]
    if split not in splits:
        raise InputError(
            f"{where}: "
            + ("pass --split" if split is None else f"no split {split!r}")
            + f" (splits: {', '.join(splits)})"
        )
    return dataset[split]


def table_set(dataset, name: str, image_column: str, id_column: str | None) -> ImageSet:
    """A ``datasets.Dataset`` with random access: its image column undecoded, read row by row in the workers."""
    check_columns(name, dataset.column_names, image_column, id_column)
    check_image_feature(name, dataset.features, image_column)
    ids = [str(value) for value in dataset[id_column]] if id_column else RowIds(len(dataset))
    return ImageSet(name, ids=ids, images=ColumnImages(dataset, image_column, name), length=len(dataset))


def streamed_set(dataset, name: str, image_column: str, id_column: str | None) -> ImageSet:
    """A ``datasets.IterableDataset``, read once in order."""
    from datasets import Image as ImageFeature

    if dataset.features is not None:
        check_columns(name, list(dataset.features), image_column, id_column)
        check_image_feature(name, dataset.features, image_column)
        if isinstance(dataset.features[image_column], ImageFeature):
            dataset = dataset.cast_column(image_column, ImageFeature(decode=False))

    def stream() -> Iterator[tuple[str, Any]]:
        for index, row in enumerate(dataset):
            if index == 0:
                check_columns(name, list(row), image_column, id_column)
            yield str(row[id_column] if id_column else index), cell_image(row[image_column], f"{name}: row {index}")

    return ImageSet(name, stream=stream)


def check_columns(where: str, names: Sequence[str], image_column: str, id_column: str | None) -> None:
    for column, option in ((image_column, "--image-column"), (id_column, "--id-column")):
        if column is not None and column not in names:
            raise InputError(f"{where}: no column {column!r} (columns: {', '.join(names)}); pass {option} NAME")


def check_image_feature(where: str, features, column: str) -> None:
    from datasets import Image as ImageFeature
    from datasets import Value

    feature = features[column]
    if not (
        isinstance(feature, ImageFeature)
        or (isinstance(feature, Value) and feature.dtype in ("binary", "large_binary"))
    ):
        raise InputError(
            f"{where}: column {column!r} holds {feature}, not images (a datasets Image column or "
            "encoded bytes); pass --image-column NAME"
        )


def cell_image(value: Any, where: str) -> Any:
    """A table cell as what the input engine opens; an empty cell becomes the error of its row."""
    if value is None or (isinstance(value, dict) and value.get("bytes") is None and not value.get("path")):
        return DatasetFormatError(f"{where}: no image (empty cell)")
    return value


class ColumnImages(Sequence):
    """A dataset's image column, undecoded (``{"bytes", "path"}``), row by row: read where it is indexed."""

    def __init__(self, dataset, column: str, name: str):
        from ..preprocessing import undecoded

        self.dataset, self.column, self.name = undecoded(dataset.select_columns([column]), column), column, name

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        return cell_image(self.dataset[index][self.column], f"{self.name}: row {index}")


class RowIds(Sequence):
    """``"0"``, ``"1"``, ... : the row index as id, without a list of millions of strings."""

    def __init__(self, length: int):
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> str:
        if not 0 <= index < self.length:
            raise IndexError(index)
        return str(index)


class Subset(Sequence):
    """``items[i]`` for the ``indices``, in their order (lazy)."""

    def __init__(self, items: Sequence, indices: Sequence[int]):
        self.items, self.indices = items, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:
        return self.items[self.indices[index]]


__all__ = [
    "WHOLE",
    "ImageSet",
    "Part",
    "RowIds",
    "Subset",
    "block",
    "expand_pattern",
    "hub_dataset_set",
    "input_kind",
    "parquet_set",
    "saved_dataset_set",
    "shard_set",
]
