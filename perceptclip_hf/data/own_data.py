"""The user's own data as a dataset of the recipe, beside the paper's: ``--dataset table`` (a CSV / TSV / JSON(L)
file of images and scores or classes, :func:`.custom.load_table`) and ``--dataset imagefolder`` (one sub-folder per
class, :func:`.custom.load_imagefolder`). Each becomes a :class:`.registry.DatasetInfo` with the registry's split
options (``--splits``, ``--validation_fraction``): 10 random 80/20 splits (LoDa's), or content-disjoint ones by a
group column (the paper's protocol for datasets with shared content, e.g. AGIQA-3K's prompts)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset

from .custom import load_imagefolder, load_table
from .errors import DatasetFormatError
from .registry import DatasetInfo

OWN_DATA_TASKS = {"table": "quality", "imagefolder": "emotion"}  # the task of your own data without --task
OWN_DATASETS = tuple(OWN_DATA_TASKS)
NUM_SPLITS = 10


@dataclass(frozen=True)
class OwnData:
    """Where the user's data is and how to read it (the recipe's data options)."""

    kind: str  # "table" or "imagefolder"
    data_dir: str
    table: str | None = None
    image_column: str = "path"
    label_column: str | None = None
    group_column: str | None = None

    def table_path(self) -> Path:
        """``--table`` under ``--data_dir``, else as given (relative to the current folder)."""
        candidates = [Path(self.data_dir) / self.table, Path(self.table)]
        found = next((path for path in candidates if path.is_file()), None)
        if found is None:
            raise DatasetFormatError(
                f"--table {self.table}: no such file in --data_dir {self.data_dir} nor in the "
                "current folder; give the path of your CSV / TSV / JSON / JSONL table"
            )
        return found

    def load(self, task: str, classification: bool) -> Dataset:
        if self.kind == "imagefolder":
            if not classification:
                raise DatasetFormatError(
                    f"--dataset imagefolder: its labels are classes (sub-folders), but task "
                    f"{task!r} predicts scores; give --task emotion (or a registered "
                    "classification task), or use --dataset table for scores"
                )
            return load_imagefolder(self.data_dir)
        return load_table(
            self.table_path(),
            image_column=self.image_column,
            label_column=self.label_column,
            group_column=self.group_column,
            image_root=self.data_dir,
            name=self.kind,
            task="classification" if classification else "regression",
        )


def own_dataset_info(data: OwnData, task: str, classification: bool) -> DatasetInfo:
    """The registry row of the user's data: loaded once here (errors name the file, row and column), its classes
    from the data, its score range the labels' range."""
    ds = data.load(task, classification)
    if len(ds) == 0:
        raise DatasetFormatError(f"--dataset {data.kind} in {data.data_dir}: no images were loaded")
    class_names = tuple(ds.features["label"].names) if classification else None
    labels = ds["label"]
    return DatasetInfo(
        data.kind,
        task,
        loader=lambda data_dir, **_: ds,
        split_protocol="group" if data.group_column else "random",
        score_range=None if classification else (float(min(labels)), float(max(labels))),
        class_names=class_names,
        group_column="group" if data.group_column else None,
        num_splits=NUM_SPLITS,
    )


__all__ = ["OWN_DATASETS", "OWN_DATA_TASKS", "OwnData", "own_dataset_info"]
