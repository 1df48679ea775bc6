"""A training run's log file, `<output_dir>/train.log`: what `train.py` says (start summaries, resumes, results), the
warnings of transformers and the Trainer's per-step and per-epoch logs (loss, learning rate, validation metrics),
appended to across resumes. Written by the main process only."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from transformers import TrainerCallback
from transformers.utils import logging as transformers_logging

from ..run_layout import LOG_FILE

# The Trainer's log records go to the file only: the console already shows them (progress bar or printer).
HISTORY = logging.getLogger("perceptclip_hf.history")
HISTORY.propagate = False
HISTORY.setLevel(logging.INFO)


@contextmanager
def run_log(output_dir: str | Path, enabled: bool = True) -> Iterator[Path | None]:
    """Log `perceptclip_hf`'s INFO records, transformers' warnings and :class:`HistoryCallback`'s records to
    `<output_dir>/train.log` while the block runs; yields the file's path (`None` when not `enabled`). A run that
    fails before anything but its log is in the folder leaves no folder behind (only those it created)."""
    if not enabled:
        yield None
        return
    path = Path(output_dir) / LOG_FILE
    created = [folder for folder in (path.parent, *path.parent.parents) if not folder.exists()]
    new_log = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
    handler.setLevel(logging.INFO)
    package = logging.getLogger("perceptclip_hf")
    previous_level = package.level
    if package.getEffectiveLevel() > logging.INFO:
        package.setLevel(logging.INFO)
    package.addHandler(handler)
    HISTORY.addHandler(handler)
    transformers_logging.add_handler(handler)
    try:
        yield path
    except BaseException:
        _detach(handler, package, previous_level)
        if new_log and all(p == path for p in path.parent.iterdir()):  # a run that failed before writing anything
            path.unlink()
            for folder in created:  # the folders this run created, innermost first
                folder.rmdir()
        raise
    _detach(handler, package, previous_level)


def _detach(handler: logging.Handler, package: logging.Logger, previous_level: int) -> None:
    transformers_logging.remove_handler(handler)
    HISTORY.removeHandler(handler)
    package.removeHandler(handler)
    package.setLevel(previous_level)
    handler.close()


class HistoryCallback(TrainerCallback):
    """Each Trainer log (training loss and learning rate every `logging_steps`, evaluation metrics every epoch) as
    one line of the run's log: `step 40 epoch 2: {"loss": 0.41, ...}`."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            values = {k: round(v, 6) if isinstance(v, float) else v for k, v in logs.items()}
            HISTORY.info("step %d epoch %.4g: %s", state.global_step, state.epoch or 0, json.dumps(values))


__all__ = ["HistoryCallback", "run_log"]
