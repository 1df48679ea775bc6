"""The package as users install it: the wheel (and the sdist that builds it) holds every module and data file of the
source tree, and a non-editable install in a fresh virtual environment trains, evaluates and predicts from a folder
outside the checkout."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.helpers.paths import REPO_ROOT

# Source folder → where its files live in the wheel (setup.py's mapping, typed out again here).
INSTALLED_AS = {
    "perceptclip_hf": "perceptclip_hf",
    "modeling": "perceptclip_hf/modeling",
    "model_cards": "perceptclip_hf/model_cards",
    "configs": "perceptclip_hf/configs",
}
PROJECT_FILES = ("setup.py", "setup.cfg", "pyproject.toml", "README.md", "LICENSE")


def source_files() -> dict[str, str]:
    """Every file of the installed folders in the checkout (no caches) → its path in the wheel."""
    wanted = {}
    for folder, target in INSTALLED_AS.items():
        for path in (REPO_ROOT / folder).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix in (".py", ".md", ".yaml"):
                wanted[str(path.relative_to(REPO_ROOT))] = f"{target}/{path.relative_to(REPO_ROOT / folder)}"
    return wanted


def build(kind: str, source: Path, out: Path) -> Path:
    """`setuptools.build_meta.build_<kind>` (PEP 517) in a fresh process, in `source`."""
    out.mkdir(parents=True, exist_ok=True)
    code = f"from setuptools import build_meta; print(build_meta.build_{kind}({str(out)!r}))"
    result = subprocess.run([sys.executable, "-c", code], cwd=source, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return out / result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> dict[str, Path]:
    """The sdist and wheel built from a copy of the checkout, and the wheel built from that sdist."""
    root = tmp_path_factory.mktemp("build")
    copy = root / "src"
    for folder in INSTALLED_AS:
        shutil.copytree(REPO_ROOT / folder, copy / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in PROJECT_FILES:
        shutil.copy(REPO_ROOT / name, copy / name)
    sdist = build("sdist", copy, root / "dist")
    wheel = build("wheel", copy, root / "dist")
    with tarfile.open(sdist) as archive:
        archive.extractall(root / "unpacked", filter="data")
    (unpacked,) = (root / "unpacked").iterdir()
    return {"sdist": sdist, "wheel": wheel, "wheel_from_sdist": build("wheel", unpacked, root / "from_sdist")}


def test_the_wheel_holds_every_module_and_data_file_of_the_tree(built):
    wheel = zipfile.ZipFile(built["wheel"])
    names = set(wheel.namelist())
    missing = {source: target for source, target in source_files().items() if target not in names}
    assert not missing, f"not in the wheel: {missing}"
    assert {
        "perceptclip_hf/reports/__init__.py",
        "perceptclip_hf/modeling/modeling_perceptclip.py",
        "perceptclip_hf/model_cards/layout.md",
        "perceptclip_hf/configs/quickstart.yaml",
        "perceptclip_hf/evaluation/metrics_modules/perceptual_regression/perceptual_regression.py",
    } <= names
    dist_info = next(name.split("/")[0] for name in names if name.endswith(".dist-info/METADATA"))
    assert f"{dist_info}/licenses/LICENSE" in names
    metadata = wheel.read(f"{dist_info}/METADATA").decode()
    assert "License: MIT" in metadata or "License-Expression: MIT" in metadata
    import perceptclip_hf

    assert f"Version: {perceptclip_hf.__version__}" in metadata
    entry_points = wheel.read(f"{dist_info}/entry_points.txt").decode()
    assert "perceptclip = perceptclip_hf.cli:main" in entry_points
    assert not [name for name in names if name.startswith(("tests/", "benchmarks/", "modeling/", "configs/"))]


def test_the_sdist_builds_the_same_wheel(built):
    members = {name.split("/", 1)[1] for name in tarfile.open(built["sdist"]).getnames() if "/" in name}
    assert {*PROJECT_FILES, *source_files()} <= members
    files = [set(zipfile.ZipFile(built[kind]).namelist()) for kind in ("wheel", "wheel_from_sdist")]
    assert files[0] == files[1]
    wheel, again = (zipfile.ZipFile(built[kind]) for kind in ("wheel", "wheel_from_sdist"))
    assert all(wheel.read(name) == again.read(name) for name in files[0] if not name.endswith("RECORD"))


@pytest.fixture(scope="session")
def installed(built, tmp_path_factory) -> Path:
    """A fresh virtual environment holding the wheel, non-editable; its dependencies are this environment's
    (a .pth line: no index needed), never this checkout."""
    env = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=120)
    site = Path(
        subprocess.run(
            [env / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (site / "test-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(env / "bin" / "python"),
            "install",
            "--no-deps",
            "--no-index",
            "--no-cache-dir",
            str(built["wheel"]),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return env


def test_a_non_editable_install_trains_evaluates_and_predicts_outside_the_checkout(installed, synthetic_dir, tmp_path):
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{installed / 'bin'}{os.pathsep}{env['PATH']}"

    def perceptclip(*args: str) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [str(installed / "bin" / "perceptclip"), *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    where = subprocess.run(
        [installed / "bin" / "python", "-c", "import perceptclip_hf; print(perceptclip_hf.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(installed) and not Path(where).is_relative_to(REPO_ROOT)

    # The recipe by name: the package carries it (there is no configs/ folder here).
    perceptclip(
        "train",
        "--config",
        "quickstart",
        "--data_dir",
        str(synthetic_dir),
        "--output_dir",
        "run",
        "--num_train_epochs",
        "1",
        "--max_train_samples",
        "64",
        "--eval_crops",
        "1",
        "--test_crops",
        "2",
        "--disable_tqdm",
        "true",
    )
    model = tmp_path / "run" / "split_0" / "model"
    assert (model / "model.safetensors").is_file() and (tmp_path / "run" / "results.json").is_file()

    evaluated = perceptclip(
        "evaluate",
        "--model",
        str(model),
        "--dataset",
        "synthetic_iqa",
        "--data-dir",
        str(synthetic_dir),
        "--tta",
        "2",
        "--report",
        "report",
        "--num-workers",
        "0",
    )
    report = json.loads((tmp_path / "report" / "evaluation.json").read_text())
    assert report == json.loads(evaluated.stdout) and {"srcc", "plcc", "krcc"} <= set(report["metrics"])
    assert (tmp_path / "report" / "report.html").is_file() and list((tmp_path / "report").glob("*.png"))

    images = sorted(synthetic_dir.rglob("*.png"))[:5]
    perceptclip("predict", *map(str, images), "--model", str(model), "--output", "scores.csv", "--num-workers", "0")
    with open(tmp_path / "scores.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(row["id"] for row in rows) == sorted(str(path) for path in images)
    assert all(float(row["score"]) == float(row["score"]) for row in rows)  # numbers, not NaN
