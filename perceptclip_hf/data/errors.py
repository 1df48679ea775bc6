"""Error type and the raise-or-skip policy shared by every loader."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Literal

from ..errors import UserError

logger = logging.getLogger("perceptclip_hf.data")

OnError = Literal["raise", "skip"]
REPORT_PREFIX = "perceptclip_hf load report: "


class DatasetFormatError(UserError, ValueError):
    """A dataset file, column, row or image does not match the expected layout."""


@dataclass
class LoadReport:
    """What a loader read and what it left out; stored in ``ds.info.description``.

    ``skipped``: bad rows (``on_error="skip"``). ``not_loaded``: ``"<path>: <reason>"`` for files found in an image
    folder but not loaded, and for empty class folders. ``duplicates``: images listed more than once, with what
    was kept (``duplicates="first"`` / ``"mean"``).
    """

    dataset: str
    num_source_rows: int = 0
    skipped: list[str] = field(default_factory=list)
    not_loaded: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def to_description(self) -> str:
        return REPORT_PREFIX + json.dumps(asdict(self))

    @classmethod
    def from_description(cls, description: str | None) -> LoadReport | None:
        """The report in ``description``; lists absent from older reports are empty."""
        if not description or not description.startswith(REPORT_PREFIX):
            return None
        data = json.loads(description[len(REPORT_PREFIX) :])
        return cls(
            data["dataset"],
            data["num_source_rows"],
            list(data["skipped"]),
            list(data.get("not_loaded", [])),
            list(data.get("duplicates", [])),
        )


def get_load_report(dataset) -> LoadReport | None:
    """The :class:`LoadReport` of a dataset built by this package (``None`` for other datasets)."""
    return LoadReport.from_description(dataset.info.description)


class RowErrors:
    """Raise on a bad row (``on_error="raise"``) or log and count it (``on_error="skip"``)."""

    def __init__(self, report: LoadReport, on_error: OnError = "raise"):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.report = report
        self.on_error = on_error

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Run one row's parsing; a :class:`DatasetFormatError` inside is raised or skipped."""
        try:
            yield
        except DatasetFormatError as err:
            if self.on_error == "raise":
                raise
            self.report.skipped.append(str(err))
            logger.warning("%s: skipped: %s", self.report.dataset, err)


def row_error(where: str, problem: str) -> DatasetFormatError:
    """An actionable error for one row: ``"<where>: <problem>; fix the file or pass on_error='skip'"``."""
    return DatasetFormatError(f"{where}: {problem}; fix the file or pass on_error='skip'")
