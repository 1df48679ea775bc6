"""`import perceptclip_hf` and the command line start without torch / transformers; model-side names load on first
use (PEP 562), and loading them registers the Auto classes."""

from __future__ import annotations

import importlib.metadata
import json

import pytest

import perceptclip_hf
from perceptclip_hf import modeling
from perceptclip_hf.cli import SUBCOMMANDS, main
from tests.helpers.cli import run_python

HEAVY = ("torch", "transformers", "scipy", "sklearn", "datasets", "PIL", "matplotlib", "gradio")


def test_help_and_usage_errors_need_no_model_stack():
    """Every --help but `train --help`, whose options are transformers' `TrainingArguments` (that import is torch's)."""
    commands = [
        ["--help"],
        *([module.NAME, "--help"] for module in SUBCOMMANDS if module.NAME != "train"),
        ["predict", "missing.jpg", "--model", "missing"],
        ["--version"],
    ]
    result = run_python(f"""
import contextlib, io, json, sys
import perceptclip_hf.cli
from perceptclip_hf import output_safety  # a from-import of a submodule asks the package for the name first
codes = []
for argv in {commands!r}:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            codes.append([perceptclip_hf.cli.main(argv), err.getvalue()])
        except SystemExit as exit:
            codes.append([exit.code, err.getvalue()])
print(json.dumps({{"codes": codes, "loaded": [name for name in {HEAVY!r} if name in sys.modules]}}))
""")
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["loaded"] == []
    *helps, (usage_code, usage_error), (version_code, _) = report["codes"]
    assert all(code == 0 for code, _ in helps) and version_code == 0
    assert usage_code == 2 and usage_error.count("\n") == 1 and "--model missing" in usage_error


def test_version_is_the_installed_distributions(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0
    assert capsys.readouterr().out.split() == ["perceptclip", importlib.metadata.version("perceptclip-hf")]
    assert perceptclip_hf.__version__ == importlib.metadata.version("perceptclip-hf")


def test_every_lazy_name_resolves_to_the_model_code():
    assert set(modeling.__all__) <= set(perceptclip_hf.__all__)
    for name in perceptclip_hf.__all__:
        assert getattr(perceptclip_hf, name) is not None and name in dir(perceptclip_hf)
    assert perceptclip_hf.PerceptCLIPForRegression is modeling.PerceptCLIPForRegression
    from perceptclip_hf.scoring.scorer import PerceptScorer

    assert perceptclip_hf.PerceptScorer is PerceptScorer
    with pytest.raises(AttributeError, match="no attribute 'PerceptClipForRegression'"):
        perceptclip_hf.PerceptClipForRegression  # noqa: B018


def test_the_model_classes_register_the_auto_classes_on_first_import(tiny_clip_base, tmp_path):
    """In a fresh process: `import perceptclip_hf` registers nothing; the first model-side import does, and AutoModel /
    pipeline load our saved model without trust_remote_code."""
    from tests.helpers.models import save_trained_like

    model_dir = save_trained_like(tiny_clip_base, tmp_path / "model", task="quality", score_range=[1.0, 5.0])
    run_python(f"""
import sys
import perceptclip_hf
assert "torch" not in sys.modules and "transformers" not in sys.modules
from transformers import AutoConfig
try:
    AutoConfig.for_model("perceptclip")
    raise SystemExit("registered before any model code was imported")
except ValueError:
    pass
from perceptclip_hf import PerceptCLIPForRegression
from transformers import AutoModel, pipeline
model = AutoModel.from_pretrained({str(model_dir)!r})
assert type(model) is PerceptCLIPForRegression, type(model)
scores = pipeline("image-classification", model={str(model_dir)!r})
""")
