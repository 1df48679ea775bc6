"""A Hugging Face Space folder that serves the demo (:mod:`.demo`) of a published model: ``app.py``,
``requirements.txt`` and ``README.md`` with the Spaces front matter (``sdk: gradio``). ``push_to_hub.py --space DIR``
writes it; upload it with ``hf upload me/my-space DIR --repo-type space``.

``app.py`` loads the model by its Hub id; the ``PERCEPTCLIP_MODEL`` environment variable overrides it (a local folder
or another id). gradio reads ``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` (set by Spaces) for the address.
"""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, requires, version
from pathlib import Path

from ..output_safety import check_free_folder

MODEL_ENV = "PERCEPTCLIP_MODEL"
PACKAGE = "perceptclip-hf"
GRADIO_VERSION = "6.31.0"  # the Space's gradio when none is installed here (the version the demo was tested with)
FILES = ("app.py", "requirements.txt", "README.md")

APP = '''"""Hugging Face Space: the PerceptCLIP demo (`perceptclip demo`) of {model}; written by
push_to_hub.py --space. {env} names another model (a Hub id or a local folder), GRADIO_SERVER_NAME and
GRADIO_SERVER_PORT the address.
"""

import os

from perceptclip_hf.demo.app import build_demo, load_models

MODEL = os.environ.get("{env}") or "{model}"

demo = build_demo(load_models([MODEL]), title="PerceptCLIP · {model}")

if __name__ == "__main__":
    demo.queue().launch()
'''

README = """---
title: {title}
emoji: 🖼️
colorFrom: indigo
colorTo: blue
sdk: gradio
sdk_version: {gradio}
app_file: app.py
pinned: false
models:
- {model}
---

# PerceptCLIP · {model}

Perceptual image scoring with CLIP + LoRA (PerceptCLIP, [arXiv 2503.13260](https://arxiv.org/abs/2503.13260)) with
the model [{model}](https://huggingface.co/{model}). Upload one image for its score and what the score means, with a
heatmap of what the model looks at; upload many for a sortable table, a histogram and a CSV.

From Python (`pip install gradio_client`): `Client("<this Space>").predict(handle_file("photo.jpg"),
api_name="/score")` returns the model's result, `{{"score": ...}}` or `{{"label": ..., "probabilities": {{...}}}}`,
as `perceptclip_hf.scoring.scorer.PerceptScorer` computes it.

Written by `push_to_hub.py --space`; `app.py` loads `{model}` (the `{env}` variable overrides it).
"""


def package_requirement(spec: str | None = None) -> str:
    """How the Space installs this package: ``spec`` (a requirement line: a git URL, a wheel, a version), else
    ``perceptclip-hf[demo]==<this version>`` (resolves once the package is on PyPI)."""
    if spec:
        return spec
    try:
        return f"{PACKAGE}[demo]=={version(PACKAGE)}"
    except PackageNotFoundError:
        return f"{PACKAGE}[demo]"


def dependency_lines() -> list[str]:
    """The package's own requirements (``install_requires``, no extras): the ranges it was tested with."""
    try:
        return [line for line in requires(PACKAGE) or [] if "extra ==" not in line]
    except PackageNotFoundError:
        return []


def requirements_text(spec: str | None = None) -> str:
    note = (
        (
            "# perceptclip-hf is not on PyPI yet: replace the line below with where its source lives, e.g.\n"
            "#   perceptclip-hf[demo] @ git+https://github.com/<owner>/<repo>.git@<tag>\n"
            "# or a wheel uploaded next to app.py (`pip wheel . -w dist/`):\n"
            "#   ./perceptclip_hf-<version>-py3-none-any.whl\n"
            "# (push_to_hub.py --space-requirement LINE writes that line).\n"
        )
        if not spec
        else ""
    )
    note += "# gradio itself is installed by Spaces from the sdk_version of README.md.\n"
    deps = dependency_lines()
    pins = "# its dependencies, as the package declares them:\n" + "\n".join(deps) + "\n" if deps else ""
    return note + package_requirement(spec) + "\n" + pins


def gradio_version() -> str:
    try:
        return version("gradio")
    except PackageNotFoundError:
        return GRADIO_VERSION


def space_title(model: str) -> str:
    """A Space title (at most 30 characters, Hub rule) from the model's name."""
    return re.sub(r"[^\w .-]", " ", f"PerceptCLIP {model.rsplit('/', 1)[-1]}")[:30].strip()


def write_space_folder(folder: str | Path, model: str, requirement: str | None = None) -> Path:
    """Write the Space of ``model`` (a Hub id: what ``app.py`` loads) to ``folder``: new or empty, an earlier Space
    folder or a clone of the Space repo (only :data:`FILES` are rewritten). ``requirement``: the requirements line
    that installs the package (default :func:`package_requirement`)."""
    folder = Path(folder)
    check_free_folder(folder, "--space", rewritten=FILES)  # a clone of the Space repo keeps its .git
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "app.py").write_text(APP.format(model=model, env=MODEL_ENV), encoding="utf-8")
    (folder / "requirements.txt").write_text(requirements_text(requirement), encoding="utf-8")
    (folder / "README.md").write_text(
        README.format(title=space_title(model), gradio=gradio_version(), model=model, env=MODEL_ENV), encoding="utf-8"
    )
    return folder


__all__ = ["MODEL_ENV", "package_requirement", "requirements_text", "write_space_folder"]
