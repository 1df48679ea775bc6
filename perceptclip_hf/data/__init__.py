"""Data layer: loaders for the paper's datasets (original layouts) and their split protocols.

Typical use::

    from perceptclip_hf.data import load_benchmark, benchmark_splits, get_dataset_info
    from perceptclip_hf.preprocessing import with_image_transform
    from perceptclip_hf.tasks import build_transform
    ds = load_benchmark("koniq10k", "/data/koniq")
    splits = benchmark_splits("koniq10k", ds, split=0)          # train / validation / test
    info = get_dataset_info("koniq10k")
    train = repeat_dataset(with_image_transform(splits["train"], build_transform(info.task, True)), info.replicas)

Image → tensor transforms live in :mod:`perceptclip_hf.preprocessing`.
"""

from .custom import load_imagefolder, load_table
from .emotion import EMOSET_CLASSES, EMOTIONROI_CLASSES, load_emoset, load_emotionroi
from .epochs import repeat_dataset
from .errors import DatasetFormatError, LoadReport, get_load_report
from .images import open_image, to_rgb
from .iqa_authentic import load_agiqa3k, load_flive, load_koniq10k, load_livec, load_spaq
from .iqa_synthetic import load_kadid10k, load_live, load_tid2013
from .memorability import load_lamem, load_things
from .registry import DatasetInfo, benchmark_splits, get_dataset_info, list_datasets, load_benchmark, register_dataset
from .splits import (
    LODA_SEED,
    SplitTooSmallError,
    column_splits,
    fraction_splits,
    group_split_names,
    grouped_splits,
    hold_out,
    lamem_splits,
    loda_permutation,
    loda_split_indices,
    loda_splits,
    splits_from_file,
    splits_from_names,
)

__all__ = [
    "EMOSET_CLASSES",
    "EMOTIONROI_CLASSES",
    "LODA_SEED",
    "DatasetFormatError",
    "DatasetInfo",
    "LoadReport",
    "SplitTooSmallError",
    "benchmark_splits",
    "column_splits",
    "fraction_splits",
    "get_dataset_info",
    "get_load_report",
    "group_split_names",
    "grouped_splits",
    "hold_out",
    "lamem_splits",
    "list_datasets",
    "load_agiqa3k",
    "load_benchmark",
    "load_emoset",
    "load_emotionroi",
    "load_flive",
    "load_imagefolder",
    "load_kadid10k",
    "load_koniq10k",
    "load_lamem",
    "load_live",
    "load_livec",
    "load_spaq",
    "load_table",
    "load_things",
    "load_tid2013",
    "loda_permutation",
    "loda_split_indices",
    "loda_splits",
    "open_image",
    "register_dataset",
    "repeat_dataset",
    "splits_from_file",
    "splits_from_names",
    "to_rgb",
]
