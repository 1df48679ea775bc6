"""One error policy for every command (`perceptclip ...`, `train.py`, `push_to_hub.py`).

Expected failures — bad input, a bad recipe, an unreachable Hub, a corrupt file — are :class:`UserError`: the
command prints one line (``<prog>: error: <message>``) naming the file / field / id, the cause and the fix, and
exits with status 2. ``perceptclip --debug`` or ``PERCEPTCLIP_DEBUG=1`` shows their traceback instead. Any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

DEBUG_ENV = "PERCEPTCLIP_DEBUG"
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a process it ended


class UserError(Exception):
    """An expected failure the user can fix; the message is the whole report (file/field/id, cause, fix)."""

    def __str__(self) -> str:  # a KeyError subclass would otherwise print its message quoted
        return str(self.args[0]) if self.args else ""


class ConfigurationError(UserError, ValueError):
    """A recipe or option that cannot work (unknown key, invalid value, a run that cannot learn)."""


class UnknownNameError(UserError, KeyError):
    """A task or dataset name that is not registered."""


class OutputError(UserError, OSError):
    """An output that cannot be written, or a file this command did not write (left untouched)."""


class ModelLoadError(UserError, OSError):
    """A model or backbone that cannot be loaded: unreachable Hub id, missing or corrupt weights."""


class InputError(UserError, ValueError):
    """Images to score that cannot be read as named: a missing shard, a table without the image column."""


def one_line(err: BaseException, limit: int | None = None) -> str:
    """An exception's message on one line (whitespace collapsed), cut at ``limit`` characters."""
    text = " ".join(str(err).split())
    return text[:limit] if limit else text


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "").lower() not in ("", "0", "false", "no")


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a scheduler's stop): ended as Ctrl-C ends a command — files closed, workers stopped."""


def run_command(prog: str, function: Callable[[], int]) -> int:
    """``function()``'s exit status; a :class:`UserError` becomes one line on stderr and status 2; Ctrl-C and
    SIGTERM end it with one line (status 130 / 143)."""
    try:
        with terminated_as_interrupted():
            return function()
    except UserError as err:
        if debug_enabled():
            raise
        print(f"{prog}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except Terminated:
        print(f"{prog}: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


@contextmanager
def terminated_as_interrupted() -> Iterator[None]:
    """While in the block, SIGTERM raises :class:`Terminated` in the main thread (where a handler can be set)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


OFFLINE_MARKERS = (
    "couldn't connect",
    "could not connect",
    "offline",
    "connection",
    "max retries",
    "name resolution",
    "name or service not known",
    "timed out",
    "cannot find the requested files in the disk cache",
)


def is_offline_error(err: Exception) -> bool:
    """Whether ``err`` says the Hub could not be reached (no network, DNS, timeout, offline mode)."""
    name, text = type(err).__name__, str(err).lower()
    return "Connect" in name or "Timeout" in name or any(marker in text for marker in OFFLINE_MARKERS)


@contextmanager
def loading_model(
    model: str, option: str = "--model", also_check: tuple[str, ...] = (), hint: str = ""
) -> Iterator[None]:
    """Turn the ways loading ``model`` (a folder or Hub id) fails into one :class:`ModelLoadError` line naming it,
    the cause and the fix: a corrupt weights file (in ``model`` or the ``also_check`` folders, e.g. its base
    backbone) is named, an unreachable Hub id gets the local-copy recipe (``hint``: options to add after it)."""
    try:
        yield
    except UserError:
        raise
    except Exception as err:  # transformers / huggingface_hub / safetensors raise many types for the same causes
        cause = one_line(err, 300) or type(err).__name__
        corrupt = next(iter(corrupt_weights([model, *also_check])), None)
        if corrupt:
            raise ModelLoadError(
                f"{option} {model}: {corrupt[0]} is corrupt or truncated ({corrupt[1]}); save or download it again"
            ) from err
        if os.path.isdir(model):
            if isinstance(err, (OSError, ValueError, TypeError, KeyError)):
                raise ModelLoadError(f"{option} {model}: cannot load it ({type(err).__name__}: {cause})") from err
            raise
        if isinstance(err, OSError) or kind_of_hub_error(err):
            if is_offline_error(err):
                raise ModelLoadError(hub_copy_fix(model, option, hint)) from err
            raise ModelLoadError(
                f"{option} {model}: not a local folder, and the Hub could not provide it "
                f"({cause}); check the id or pass a local folder"
            ) from err
        raise


def hub_copy_fix(model: str, option: str = "--model", extra: str = "") -> str:
    """The one-line report of a Hub id that cannot be reached and is not cached, with the local-copy route."""
    return (
        f"{option} {model}: cannot reach the Hugging Face Hub and there is no cached copy; on a machine with Hub "
        f"access run `hf download {model} --local-dir DIR`, copy DIR here and pass {option} DIR{extra}"
    )


def corrupt_weights(folders) -> Iterator[tuple[str, str]]:
    """``(file, reason)`` for each ``*.safetensors`` file in ``folders`` whose header cannot be read."""
    from pathlib import Path

    from safetensors import safe_open

    for folder in folders:
        if not folder or not os.path.isdir(folder):
            continue
        for path in sorted(Path(folder).glob("*.safetensors")):
            try:
                with safe_open(str(path), framework="pt"):
                    pass
            except Exception as err:  # SafetensorError, OSError
                yield str(path), one_line(err, 200)


def kind_of_hub_error(err: Exception) -> bool:
    return type(err).__module__.startswith(("huggingface_hub", "requests", "httpx", "urllib3"))


__all__ = [
    "DEBUG_ENV",
    "ConfigurationError",
    "InputError",
    "ModelLoadError",
    "OutputError",
    "UnknownNameError",
    "UserError",
    "corrupt_weights",
    "debug_enabled",
    "hub_copy_fix",
    "loading_model",
    "one_line",
    "run_command",
]
