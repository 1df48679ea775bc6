"""``score_with_ray``: the scoring job on Ray Data — ``perceptclip predict --engine ray``.

    >>> from perceptclip_hf.integrations.ray import score_with_ray
    >>> summary = score_with_ray("photos/", {"quality": "quality", "emotion": "emotion"}, "scores/")

What runs where: the driver checks the inputs and the models as the local engine does (one line for a bad path,
model or option), walks the folders, and writes the record; Ray tasks read the inputs and decode and crop the images
(:mod:`.reading`); an actor pool runs the models (:class:`.predictor.PerceptCLIPPredictor`: one actor per GPU where
there are GPUs, else a share of the CPUs that leaves the read tasks theirs, so a small node cannot deadlock); Ray's
``write_parquet`` writes the rows (:mod:`.output_folder`). ``resume`` skips the ids the folder holds — an anti-join
on the ids, done before decoding (Ray Data's own checkpointing, alpha in Ray 2.60, filters rows of a datasource
that has the id column when it is read: here the ids are made by the package's readers).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ...errors import ConfigurationError, InputError

Report = Callable[[str], None]
ROWS_PER_FILE = 1024


def score_with_ray(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    models: Any,
    output: str | os.PathLike,
    *,
    resume: bool = False,
    retry_errors: bool = False,
    overwrite: bool = False,
    batch_size: int | None = None,
    tta: int | None = None,
    seed: int = 0,
    device: str | None = None,
    dtype: str | None = None,
    backend: str = "torch",
    fast_decode: bool = False,
    base_model: str | None = None,
    task: str | None = None,
    hf_dataset: str | None = None,
    split: str | None = None,
    streaming: bool = False,
    image_column: str = "image",
    id_column: str | None = None,
    address: str | None = None,
    actors: int | None = None,
    rows_per_file: int = ROWS_PER_FILE,
    report: Report | None = None,
    progress: bool = True,
):
    """Score ``inputs`` (as :func:`perceptclip_hf.scoring.score` takes them) with ``models`` on Ray Data into the
    folder ``output`` (Parquet files with the ``id`` column and ``_perceptclip.json``); ``resume`` continues it
    (``retry_errors``: scoring its error rows again), ``overwrite`` replaces one this function wrote. Returns a
    :class:`~perceptclip_hf.scoring.ScoringSummary`. Uses the Ray that is running (``ray.init`` already called),
    else joins ``address`` (a cluster's, ``"auto"``), else starts one on this machine. ``actors``: model actors
    (default: one per GPU, else one per 4 CPUs); ``rows_per_file``: at least that many rows per file (a killed run
    loses at most the rows not yet in a file). The other settings are :func:`perceptclip_hf.scoring.score`'s."""
    import logging

    from ...backends.runtimes import check_backend
    from ...hub.source import named_sources
    from ...scoring.inputs import collect_inputs, report_not_scored
    from ...scoring.job import ScoringSummary, output_locks

    report = report or logging.getLogger(__name__).warning
    ray = require_ray()
    paths = [os.fspath(inputs)] if isinstance(inputs, (str, os.PathLike)) else [os.fspath(path) for path in inputs]
    folder = checked_folder(paths, hf_dataset, streaming, output, resume, overwrite, retry_errors)
    check_backend(backend, dtype or "fp32", device)
    if address is not None and not ray.is_initialized():
        check_reachable(address)
    with output_locks(folder.path, (0, 1), report)[0]:
        named = {name: absolute(source) for name, source in named_sources(models, task).items()}
        tables = dict(split=split, streaming=streaming, image_column=image_column, id_column=id_column)
        image_sets, found = collect_inputs(paths, hf_dataset=hf_dataset, report=report, **tables)
        report_not_scored(found.not_scored, report)
        if all(image_set.length == 0 for image_set in image_sets):
            others = f" ({len(found.not_scored)} files that are not images or duplicates: {found.reasons()})"
            raise InputError(f"no images found in {' '.join(paths)}" + (others if found.not_scored else ""))
        settings = dict(
            tta=tta, seed=seed, batch_size=batch_size or 16, dtype=dtype, backend=backend, fast_decode=fast_decode
        )
        transforms, identity, recorded, held = model_record(named, base_model, seed, settings, progress)
        previous = folder.open(identity, recorded, report)
        work = Work(paths, found.images, previous, hf_dataset, tables)
        run = {"scored": 0, "failed": 0, "skipped": 0, "failed_before": 0, "not_scored": [], "errors": []}
        started = work.to_read and start_ray(ray, address)  # (a resume with nothing left starts no Ray)
        try:
            if work.to_read:
                plan = actor_plan(ray, actors, held)
                units = work.units(plan.read_parts)
                written, tally = run_pipeline(
                    ray, units, named, transforms, settings, base_model, previous, plan, folder, rows_per_file, progress
                )
                run = {**plan.record(), **tally, **rows_in(written), "files": [path.name for path in written]}
            entry = summary(run, work, found.not_scored)
            folder.close(entry)  # (before Ray stops: the rows are all written)
        finally:
            if started:
                ray.shutdown()
        report_errors(run["errors"], report)
        for what, why in run["not_scored"]:
            report(f"not scored: {what}: {why}")
        return ScoringSummary(
            entry["scored"],
            entry["failed"],
            entry["skipped"],
            entry["failed_before"],
            [*found.not_scored, *run["not_scored"]],
            os.fspath(output),
            where=os.fspath(output),
        )


class Work:
    """What is left to read: the image files the output does not hold (the others counted as ``skipped``,
    ``failed_before`` of them error rows) and the inputs that are not files (read in shares: their ids are known
    only as they are read)."""

    def __init__(self, paths, images, previous, hf_dataset, tables):
        from ...scoring.image_sources import input_kind
        from ...scoring.score_files import input_key

        keys = [input_key(path) for path in images]
        done = previous.done | previous.failed
        self.files = [path for path, key in zip(images, keys) if key not in done]
        self.skipped = len(images) - len(self.files)
        self.failed_before = sum(key in previous.failed for key in keys)
        self.others = [path for path in paths if input_kind(path) != "files"]
        self.hf_dataset, self.tables = hf_dataset, tables
        self.to_read = bool(self.files or self.others or hf_dataset)

    def units(self, parts: int) -> list[dict[str, str]]:
        from .reading import file_units, share_units

        units = file_units(self.files)
        if self.others or self.hf_dataset:
            parts = 1 if self.tables["streaming"] else parts  # (a stream is read once, in order)
            units += share_units(self.others, parts, hf_dataset=self.hf_dataset, **self.tables)
        return units


def summary(run: dict[str, Any], work: Work, not_scored: list[tuple[str, str]]) -> dict[str, Any]:
    """The run's entry in the folder's record."""
    from ...scoring.score_rows import row_id

    return {
        **{key: value for key, value in run.items() if key != "errors"},
        "skipped": work.skipped + run["skipped"],
        "failed_before": work.failed_before + run["failed_before"],
        "not_scored": [row_id(f"{what}: {why}") for what, why in [*not_scored, *run["not_scored"]]],
    }


def require_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            "--engine ray needs Ray Data: pip install 'perceptclip-hf[ray]' (or pip install 'ray[data]')"
        ) from None
    return ray


def checked_folder(paths, hf_dataset, streaming, output, resume, overwrite, retry_errors):
    """The output folder, checked with the options before anything loads."""
    from ...scoring.job import check_options
    from ...scoring.score_formats import FORMATS
    from .output_folder import OutputFolder

    if output is None:
        raise ConfigurationError("--engine ray writes a folder of Parquet files: pass --output FOLDER")
    mode = check_options(paths, hf_dataset, streaming, resume, overwrite, retry_errors)
    if Path(output).suffix.lower() in FORMATS:
        raise ConfigurationError(
            f"--output {output}: --engine ray writes a folder of Parquet files, not a {Path(output).suffix} file; "
            "name a folder (scores/)"
        )
    folder = OutputFolder(output, mode, retry_errors)
    folder.check()
    folder.path.parent.mkdir(parents=True, exist_ok=True)  # (its lock is beside it)
    return folder


def absolute(source):
    """A model source whose local folder is named absolutely (the actors may start in another folder)."""
    return replace(source, location=os.path.abspath(source.location)) if os.path.exists(source.location) else source


def model_record(named, base_model, seed, settings, progress: bool) -> tuple[Any, dict[str, Any], dict[str, Any], int]:
    """The models loaded once on the driver, on CPU: their test transforms (for the read tasks), what must match to
    continue the folder, what is only noted, and the bytes their weights hold. They are let go before the actors
    load their own."""
    from ...scoring.job import job_record
    from ...scoring.model_set import ScorerSet
    from ...scoring.score_rows import result_columns

    if progress:  # Ray's are the bars: transformers' weight-loading bars are turned off
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    scorers = ScorerSet.from_pretrained(
        named,
        load_kwargs={"base_model_name_or_path": base_model} if base_model else None,
        device="cpu",
        num_workers=0,
        **settings,
    )
    identity, recorded = job_record(scorers, named, seed)
    for key in ("device", "num_workers"):
        recorded.pop(key, None)
    if settings["dtype"] is None and settings["backend"] == "torch":  # (the actors' default: bf16 on a GPU)
        recorded["dtype"] = "default (bf16 on a GPU, else float32)"
        for model in identity.get("models", {"": identity}).values():
            model["runtime"]["precision"] = "default (bf16 on a GPU, else fp32)"
    held = {
        id(tensor): tensor.numel() * tensor.element_size()
        for scorer in scorers.scorers.values()
        for tensor in scorer.model.state_dict(keep_vars=True).values()
    }
    return scorers.transforms, {"columns": result_columns(scorers), **identity}, recorded, sum(held.values())


class ActorPlan:
    """How the cluster is used: ``actors`` model actors with ``gpus`` and ``cpus`` each (one per GPU; CPU-only, one per
    4 CPUs holding half of them), read tasks that decode with ``read_cpus`` each (the CPUs the actors leave: a node
    always has room for one, so it cannot deadlock), the inputs that are not files split in ``read_parts`` shares;
    each actor reserves ``memory`` (its models' weights twice over, and room for its batches)."""

    def __init__(self, cluster_cpus: float, cluster_gpus: float, actors: int | None, model_bytes: int):
        if cluster_gpus >= 1:
            self.actors, self.gpus, self.cpus = actors or int(cluster_gpus), 1, 1.0
        else:
            self.actors = actors or max(1, int(cluster_cpus // 4))
            self.gpus, self.cpus = 0, max(0.25, cluster_cpus / 2 / self.actors)
        self.read_cpus = min(1.0, max(0.25, cluster_cpus - self.actors * self.cpus))
        self.read_parts = max(1, int(cluster_cpus) * 2)
        self.memory = 2 * model_bytes + 2**29  # (an actor holds ~400 MiB before its models: torch, transformers)

    def record(self) -> dict[str, Any]:
        return {"engine": "ray", "actors": self.actors, "actor_cpus": self.cpus, "actor_gpus": self.gpus}


def actor_plan(ray, actors: int | None, model_bytes: int) -> ActorPlan:
    if actors is not None and actors < 1:
        raise ConfigurationError(f"--ray-actors {actors}: give at least 1")
    resources = ray.cluster_resources()
    return ActorPlan(resources.get("CPU", 1), resources.get("GPU", 0), actors, model_bytes)


def start_ray(ray, address: str | None) -> bool:
    """Use the running Ray, else join ``address``, else start one here; ``True`` when this call started it."""
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, include_dashboard=False, logging_level="warning", log_to_driver=False)
    except ConnectionError as err:
        raise ConfigurationError(f"--ray-address {address}: cannot join the Ray cluster ({err})") from None
    return True


def check_reachable(address: str, seconds: float = 5.0) -> None:
    """A ``HOST:PORT`` (or ``ray://HOST:PORT``) address answers within ``seconds``: Ray itself retries an address
    that does not for minutes."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # "auto", "local": Ray's own
    try:
        socket.create_connection((host, int(port)), timeout=seconds).close()
    except OSError as err:
        raise ConfigurationError(
            f"--ray-address {address}: no Ray cluster answers there ({err.strerror or type(err).__name__}); start "
            "one (ray start --head), or leave --ray-address out to start one here"
        ) from None


def run_pipeline(ray, units, named, transforms, settings, base_model, previous, plan, folder, rows_per_file, progress):
    """Read → prepare (tasks) → score (actor pool) → write; returns the files written and the tally."""
    from .output_folder import file_names
    from .predictor import PerceptCLIPPredictor
    from .reading import RunTally, read_rows

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = progress
    context.print_on_execution_start = progress
    tally = RunTally.remote()
    before = set(folder.files())
    if units:
        dataset = ray.data.from_items(units, override_num_blocks=len(units))
        dataset = dataset.map_batches(
            read_rows,
            batch_size=1,
            num_cpus=plan.read_cpus,
            fn_kwargs=dict(
                transforms=transforms,
                fast_decode=settings["fast_decode"],
                previous=ray.put((previous.done | previous.failed, previous.failed)),
                tally=tally,
                rows_per_block=settings["batch_size"],
            ),
        )
        dataset = dataset.map_batches(
            PerceptCLIPPredictor,
            batch_size=settings["batch_size"],
            compute=ray.data.ActorPoolStrategy(size=plan.actors),
            num_cpus=plan.cpus,
            num_gpus=plan.gpus,
            memory=plan.memory,  # (a resource the read tasks do not ask for: Ray keeps them out of the actors)
            fn_constructor_kwargs=dict(models=named, base_model=base_model, device=None, **settings),
        )
        dataset.write_parquet(str(folder.path), min_rows_per_file=rows_per_file, filename_provider=file_names())
    written = [path for path in folder.files() if path not in before]
    skipped, failed_before, not_scored = ray.get(tally.totals.remote())
    return written, {"skipped": skipped, "failed_before": failed_before, "not_scored": not_scored}


def rows_in(files) -> dict[str, Any]:
    """The rows of the files: how many were scored and failed, and each failed one's ``(id, error)``."""
    import pyarrow.parquet as pq

    scored, errors = 0, []
    for path in files:
        table = pq.read_table(path, columns=["id", "error"])
        scored += table.column("error").null_count
        errors += [(id_, error) for id_, error in zip(*table.to_pydict().values()) if error is not None]
    return {"scored": scored, "failed": len(errors), "errors": errors}


def report_errors(errors: list[tuple[str, str]], report: Report, shown: int = 20) -> None:
    """The unreadable images, said as the local engine says them (the first ``shown``)."""
    for id_, error in errors[:shown]:
        report(f"error: {error}" if id_ in error else f"error: {id_}: {error}")
    if len(errors) > shown:
        report(f"error: ... and {len(errors) - shown} more (the output's error column)")


__all__ = ["score_with_ray"]
