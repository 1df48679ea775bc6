"""One way to run the commands: `perceptclip(...)` calls the command line in this process (exit status, stdout and
stderr are what a user sees); `perceptclip_process(...)` runs the installed console script, for tests about the
process itself (signals, exit on kill, a fresh interpreter). Plus the readers of what they write."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import yaml
from PIL import Image

from .paths import QUICKSTART, REPO_ROOT


def perceptclip(*args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """`perceptclip ARGS` in this process, in `cwd`, with `env` added to the environment (restored after): the exit
    status, stdout and stderr a user would see."""
    from perceptclip_hf.cli import main

    return in_process(main, "perceptclip", args, cwd, env)


def train_py(*args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python train.py ARGS` in this process (train.py is `sys.exit(perceptclip_hf.cli.train.main())`)."""
    from perceptclip_hf.cli.train import main

    return in_process(main, "train.py", args, cwd, env)


def in_process(main, name: str, args, cwd: Path, env: dict | None) -> subprocess.CompletedProcess:
    """`main(argv)` as a command: its exit status, stdout and stderr. An unexpected exception is status 1 with its
    traceback on stderr, as the interpreter reports it. Environment variables that a library reads when it is
    imported (HF_HUB_OFFLINE, HF_HUB_CACHE) take effect in a fresh process only: use `perceptclip_process` there."""
    argv = [str(arg) for arg in args]
    stdout, stderr = io.StringIO(), io.StringIO()
    saved_env = dict(os.environ)
    os.environ.update({"TQDM_DISABLE": "1", **(env or {})})
    # What a fresh process prints of unconfigured logging (the last-resort handler: warnings and up, bare messages);
    # pytest's own handlers keep the records out of sys.stderr.
    last_resort = logging.StreamHandler(stderr)
    last_resort.setLevel(logging.WARNING)
    logging.getLogger().addHandler(last_resort)
    previous_cwd = os.getcwd()  # (contextlib.chdir is Python 3.11+; the package supports 3.10)
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code = main(argv)
            except SystemExit as exit:
                code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
                if exit.code is not None and not isinstance(exit.code, int):
                    print(exit.code, file=sys.stderr)
            except Exception:  # reported as the interpreter would
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(previous_cwd)
        logging.getLogger().removeHandler(last_resort)
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess([name, *argv], code or 0, stdout.getvalue(), stderr.getvalue())


def perceptclip_command() -> list[str]:
    """The installed console script, else the same entry point through the interpreter."""
    script = shutil.which("perceptclip", path=os.path.dirname(sys.executable))
    return [script] if script else [sys.executable, "-m", "perceptclip_hf.cli"]


def perceptclip_process(*args, cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """The installed ``perceptclip`` console script (else ``python -m perceptclip_hf.cli``), as a user runs it."""
    return subprocess.run(
        [*perceptclip_command(), *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "TQDM_DISABLE": "1", **(env or {})},
    )


def run_python(code: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter; fail the test with its output if it fails."""
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, f"subprocess failed:\nSTDOUT:\n{result.stdout}\nSTDERR:\n{result.stderr}"
    return result


# `accelerate launch` options for two CPU processes (gloo): the launch line of hf-notes.
TWO_CPU_PROCESSES = ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
TWO_CPU_PROCESSES += ["--dynamo_backend", "no"]


def two_cpu_processes() -> list[str]:
    """`TWO_CPU_PROCESSES` on a port of their own: accelerate's default (29500) is shared by every launch, and two
    launches from the two pytest-xdist workers at once collided on it (EADDRINUSE; MASTER_PORT is not read)."""
    return [*TWO_CPU_PROCESSES, "--main_process_port", str(free_port())]


def free_port() -> int:
    """A TCP port nothing listens on now."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def train_command(config: Path, *extra: str) -> list[str]:
    return [sys.executable, str(REPO_ROOT / "train.py"), "--config", str(config), *extra]


def tiny_recipe(tmp_path: Path, synthetic_dir: Path, **overrides) -> Path:
    """The quickstart recipe, shortened for tests."""
    from perceptclip_hf.training.recipe import load_config

    recipe = load_config(QUICKSTART)
    recipe.update(
        data_dir=[str(synthetic_dir)],
        output_dir=str(tmp_path / "run"),
        num_train_epochs=2,
        max_train_samples=160,
        eval_crops=2,
        test_crops=3,
        disable_tqdm=True,
    )
    recipe.update(overrides)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_clean_failure(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit status 2, no traceback, and the error line names every fragment; returns the error line."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


def read_rows(path: Path) -> list[dict]:
    """A score file's rows as the user reads them (CSV values stay strings)."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def assert_report_folder(out: Path) -> set[str]:
    """Every PNG opens; report.md names only files in `out`; report.html references no file at all (its images are
    data URIs). Returns the PNG names."""
    pngs = {path.name for path in out.glob("*.png")}
    for name in pngs:
        with Image.open(out / name) as image:
            image.verify()
    named = set(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (out / "report.md").read_text()))
    assert named and named <= pngs and all("/" not in name for name in named)
    page = (out / "report.html").read_text()
    sources = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", page)
    assert len(sources) == len(named) and all(source.startswith("data:image/png;base64,") for source in sources)
    return pngs


def kill_after_lines(process: subprocess.Popen, path: Path, lines: int = 6) -> int:
    """SIGKILL ``process`` once ``path`` holds ``lines`` lines (within 2 minutes); the lines it holds then."""
    deadline = time.monotonic() + 120
    while not (path.exists() and path.read_bytes().count(b"\n") >= lines) and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    return path.read_bytes().count(b"\n")
