"""The model on ONNX Runtime and OpenVINO: `perceptclip export` on every backbone family, the quickstart model and an
official checkpoint (checked with onnxruntime / openvino called directly, and AutoModel on the folder), the agreement
gate refusing a precision that falls short, and `perceptclip predict --backend` giving torch's rows on real
AGIQA-3K images, recorded so that --resume never mixes backends; `--backend auto` measuring once and reusing its choice.

OpenVINO runs in processes of its own here (the console script, `run_python`), as a user's command does: a pytest
worker that had run it in-process, then trained with the Trainer, crashed (SIGSEGV) spawning a subprocess later
(2026-12-06, openvino 2026.4.1, torch 2.13); a process that only scores is not affected (tested here)."""

from __future__ import annotations

import csv
import json
import shutil
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnxruntime
import pytest
import torch
from huggingface_hub import constants
from PIL import Image
from transformers import AutoModel, Dinov2Model, ViTModel

from perceptclip_hf import PerceptCLIPConfig, PerceptCLIPForRegression
from perceptclip_hf.backends.agreement import Agreement
from perceptclip_hf.backends.layout import RECORD_FILE
from perceptclip_hf.data.synthetic import procedural_images
from perceptclip_hf.modeling.modeling_perceptclip import create_model
from perceptclip_hf.scoring.scorer import PerceptScorer
from tests.helpers.cli import perceptclip, perceptclip_process, run_python
from tests.helpers.models import TINY_HEAD, TINY_VIT, randomize_lora, resnet_model
from tests.helpers.official import write_release
from tests.helpers.paths import AGIQA_DIR


@pytest.fixture(autouse=True)
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hub cache of the test's own: where the official conversion and the on-the-fly exports go."""
    cache = tmp_path / "hub-cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def openvino_process(*args, cwd: Path, hub_cache: Path):
    """`perceptclip ARGS` in a process of its own (see the module docstring), with this test's Hub cache; within
    2 minutes (OpenVINO's converter would wait for minutes on its telemetry offline: not used)."""
    return perceptclip_process(*args, cwd=cwd, env={"HF_HUB_CACHE": str(hub_cache)}, timeout=120)


def exported_files_compute_the_model(model_dir: Path, out: Path, hub_cache: Path) -> None:
    """`perceptclip export` in both formats into `out`; the folder loads with AutoModel and computes the model's
    logits; onnxruntime and openvino, called directly on a batch of another size than the export's sample (a dynamic
    batch axis), give them within 1e-4."""
    size = PerceptScorer.from_pretrained(model_dir, tta=1, num_workers=0).transform.crop_size  # the serving crop
    pixels = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(0))
    np.save(out.parent / "pixels.npy", pixels.numpy())
    onnx = perceptclip("export", out, "--model", model_dir, "--format", "onnx", cwd=out.parent)
    assert json.loads((out / RECORD_FILE).read_text())["image_size"] == [size, size]
    # openvino in a process of its own (the module docstring): the export command, then the IR compiled directly
    xml, got = out / "openvino" / "openvino_model.xml", out.parent / "openvino_logits.npy"
    openvino = run_python(
        f"import numpy as np, openvino\n"
        f"from perceptclip_hf.cli import main\n"
        f"assert main(['export', {str(out)!r}, '--model', {str(model_dir)!r}, '--format', 'openvino']) == 0\n"
        f"compiled = openvino.Core().compile_model({str(xml)!r}, 'CPU', {{'INFERENCE_PRECISION_HINT': 'f32'}})\n"
        f"np.save({str(got)!r}, compiled(np.load({str(out.parent / 'pixels.npy')!r}))[0])",
        env={"HF_HUB_CACHE": str(hub_cache), "TQDM_DISABLE": "1"},
        timeout=120,  # (OpenVINO's converter would wait for minutes on its telemetry offline: not used)
    )
    for result in (onnx, openvino):
        assert result.returncode == 0, result.stderr
        assert "fp32; against PyTorch fp32" in result.stderr and "max |Δ|" in result.stderr
    with torch.no_grad():
        expected = AutoModel.from_pretrained(model_dir).eval()(pixels).logits
        assert torch.allclose(AutoModel.from_pretrained(out).eval()(pixels).logits, expected, atol=1e-6)
    session = onnxruntime.InferenceSession(str(out / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [tensor.name for tensor in session.get_inputs()] == ["pixel_values"]
    logits = session.run(["logits"], {"pixel_values": pixels.numpy()})[0]
    np.testing.assert_allclose(logits, expected.numpy(), atol=1e-4)
    np.testing.assert_allclose(np.load(got), expected.numpy(), atol=1e-4)


def lora_model_on(backbone_class, config_class_kwargs: dict, folder: Path) -> Path:
    """A LoRA model (non-zero LoRA, as after training) on a tiny saved `backbone_class` backbone."""
    torch.manual_seed(0)
    backbone_class(backbone_class.config_class(**config_class_kwargs)).save_pretrained(folder / "base")
    model = PerceptCLIPForRegression.from_backbone(str(folder / "base"), task="memorability", **TINY_HEAD)
    randomize_lora(model)
    model.save_pretrained(folder / "model")
    return folder / "model"


def full_model(vision_config: dict, folder: Path) -> Path:
    torch.manual_seed(0)
    create_model(PerceptCLIPConfig(vision_config=vision_config, adaptation="full", **TINY_HEAD)).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("family", ["clip-quality", "clip-emotion", "siglip", "vit", "dinov2", "resnet"])
def test_export_on_every_backbone_family_computes_the_model(family, quality_dir, emotion_dir, tmp_path, hub_cache):
    models = {
        "clip-quality": lambda: quality_dir,
        "clip-emotion": lambda: emotion_dir,
        "siglip": lambda: full_model(dict(TINY_VIT, model_type="siglip_vision_model"), tmp_path / "siglip"),
        "vit": lambda: lora_model_on(ViTModel, TINY_VIT, tmp_path),
        "dinov2": lambda: lora_model_on(Dinov2Model, dict(TINY_VIT, mlp_ratio=2), tmp_path),
        "resnet": lambda: resnet_model().save_pretrained(tmp_path / "resnet") or tmp_path / "resnet",
    }
    exported_files_compute_the_model(models[family](), tmp_path / "out", hub_cache)


def test_export_of_the_quickstart_model_and_an_official_checkpoint(trained_run, tmp_path, hub_cache):
    quickstart = next((trained_run / "run").glob("**/model/config.json")).parent
    exported_files_compute_the_model(quickstart, tmp_path / "quickstart", hub_cache)
    write_release(tmp_path / "release")
    official = tmp_path / "release" / "quality" / "perceptCLIP_IQA.pth"
    out = tmp_path / "official"
    options = ("--task", "quality", "--base-model", tmp_path / "release" / "clip")
    result = perceptclip("export", out, "--model", official, "--format", "onnx", *options, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    result = openvino_process(
        "export",
        tmp_path / "official-openvino",
        "--model",
        official,
        "--format",
        "openvino",
        *options,
        cwd=tmp_path,
        hub_cache=hub_cache,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "official-openvino" / "openvino" / "openvino_model.bin").is_file()
    load = {"base_model_name_or_path": str(tmp_path / "release" / "clip"), "task": "quality"}
    scorer = PerceptScorer.from_pretrained(official, load_kwargs=load, tta=1)
    pixels = scorer.preprocess(procedural_images(1)[0])[None]
    session = onnxruntime.InferenceSession(str(out / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"pixel_values": pixels.numpy()})[0]
    np.testing.assert_allclose(logits, scorer.predict_logits(pixels).numpy(), atol=1e-4)


# ----- the agreement gate ------------------------------------------------------------------------------------------


def test_agreement_numbers_match_an_independent_computation():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(40, 3))
    candidate = reference + rng.normal(scale=0.3, size=(40, 3))
    agreement = Agreement.measure(reference, candidate, classification=True)
    ranks = lambda x: np.argsort(np.argsort(x))  # noqa: E731 - Spearman = Pearson of the ranks (no ties here)
    rho = min(np.corrcoef(ranks(reference[:, k]), ranks(candidate[:, k]))[0, 1] for k in range(3))
    assert agreement.spearman == pytest.approx(rho, abs=1e-12)
    assert agreement.max_abs == pytest.approx(np.abs(reference - candidate).max())
    assert agreement.top1 == np.mean(reference.argmax(1) == candidate.argmax(1))
    assert agreement.images == 40 and Agreement.measure(reference, candidate, False).top1 is None
    assert agreement.shortfalls("fp32") == [f"max |Δ| {agreement.max_abs:.2g} (fp32 needs ≤ 0.0001)"]
    constant = Agreement.measure(np.ones((5, 1)), np.arange(5.0)[:, None], False)
    assert "Spearman undefined" in constant.shortfalls("int8")[0]


def nearly_identical_images(folder: Path, count: int = 16) -> Path:
    """A calibration set built to fail a lower precision: one scene, each copy with 4 pixels one level brighter, so
    fp32's scores differ in their last digits and int8 / bf16 rounding reorders them."""
    scene = np.asarray(procedural_images(1, size=64)[0]).astype(int)
    rng = np.random.default_rng(0)
    folder.mkdir()
    for index in range(count):
        pixels = scene.copy()
        pixels[rng.integers(0, 64, 4), rng.integers(0, 64, 4)] += 1
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{index}.png")
    return folder


@pytest.mark.parametrize("format, precision", [("onnx", "int8"), ("openvino", "bf16")])
def test_the_gate_refuses_a_precision_that_falls_short_naming_the_numbers(format, precision, quality_dir, tmp_path):
    calibration = nearly_identical_images(tmp_path / "calibration")
    out = tmp_path / "out"
    options = ("--format", format, "--precision", precision, "--calibration", calibration)
    cache = tmp_path.parent / f"{tmp_path.name}-hub-cache"  # (beside tmp_path: the test lists what tmp_path holds)
    export = perceptclip if format == "onnx" else partial(openvino_process, hub_cache=cache)
    result = export("export", out, "--model", quality_dir, *options, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert f"--format {format} --precision {precision}" in lines[0] and "refused" in lines[0]
    spearman = float(lines[0].split("Spearman ")[1].split(" ")[0])
    assert spearman < 0.99 and "on 16 images" in lines[0] and "(needs ≥ 0.99)" in lines[0]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["calibration"]  # no OUT, no staging folder left
    # the same precision on images that differ passes, and says by how much
    result = export("export", out, "--model", quality_dir, "--format", format, "--precision", precision, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    record = json.loads((out / RECORD_FILE).read_text())
    kept = [entry for entry in record["exports"].values() if entry["precision"] == precision]
    assert len(kept) == 1 and kept[0]["agreement"]["spearman"] >= 0.99 and kept[0]["agreement"]["images"] == 32


def test_export_refuses_a_folder_it_did_not_write_and_a_precision_of_another_format(quality_dir, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    result = perceptclip("export", tmp_path / "mine", "--model", quality_dir, "--format", "onnx", cwd=tmp_path)
    assert result.returncode == 2 and "holds files not written by perceptclip-hf export" in result.stderr
    assert sorted(path.name for path in (tmp_path / "mine").iterdir()) == ["notes.txt"]
    result = perceptclip(
        "export", tmp_path / "o", "--model", quality_dir, "--format", "onnx", "--precision", "bf16", cwd=tmp_path
    )
    assert result.returncode == 2
    assert (
        "--precision bf16 is not an export of --format onnx (it has fp32, int8); --format openvino has it"
        in result.stderr
    )


# ----- predict on the backends -------------------------------------------------------------------------------------


def score_rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["id"]: row for row in csv.DictReader(handle)}


@pytest.fixture(scope="module")
def agiqa_images(tmp_path_factory) -> Path:
    """Six real AGIQA-3K images and one broken file."""
    folder = tmp_path_factory.mktemp("agiqa")
    for source in sorted((AGIQA_DIR / "images").iterdir())[:6]:
        shutil.copy(source, folder / source.name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return folder


def test_predict_on_onnxruntime_and_openvino_gives_torch_rows_and_resume_keeps_the_backend(
    agiqa_images, quality_dir, emotion_dir, tmp_path, hub_cache
):
    models = ("--model", f"quality={quality_dir}", "--model", f"emotion={emotion_dir}", "--tta", "3")
    rows = {}
    for backend in ("torch", "onnxruntime", "openvino"):
        output = tmp_path / f"{backend}.csv"
        options = ("--backend", backend, "--dtype", "fp32", "--output", output, "--num-workers", "0")
        predict = perceptclip if backend != "openvino" else partial(openvino_process, hub_cache=hub_cache)
        result = predict("predict", agiqa_images, *models, *options, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "6 scored, 1 failed" in result.stderr
        rows[backend] = score_rows(output)
        record = json.loads(output.with_name(output.name + ".meta.json").read_text())
        runtime = record["models"]["quality"]["runtime"]
        assert runtime["backend"] == backend and runtime["precision"] == "fp32"
        assert ("export" in runtime) == (backend != "torch")
    columns = rows["torch"][next(iter(rows["torch"]))]
    numeric = [name for name in columns if name == "quality_score" or name.startswith("emotion_prob_")]
    assert len(numeric) == 9
    for backend in ("onnxruntime", "openvino"):
        assert rows[backend].keys() == rows["torch"].keys()
        for id_, row in rows["torch"].items():
            if row["error"]:
                assert rows[backend][id_]["error"] == row["error"]
                continue
            assert rows[backend][id_]["emotion_label"] == row["emotion_label"]
            for name in numeric:
                assert float(rows[backend][id_][name]) == pytest.approx(float(row[name]), abs=1e-4), (backend, name)
    # each model was exported once, into the cache, and both backends ran that file
    assert len(list((hub_cache / "perceptclip-exports").iterdir())) == 2
    resumed = perceptclip(
        "predict",
        agiqa_images,
        *models,
        "--backend",
        "torch",
        "--output",
        tmp_path / "onnxruntime.csv",
        "--resume",
        cwd=tmp_path,
    )
    assert resumed.returncode == 2
    assert (
        "runtime" in resumed.stderr
        and "'backend': 'onnxruntime'" in resumed.stderr
        and "'backend': 'torch'" in resumed.stderr
    )


def test_predict_runs_the_export_a_folder_ships_and_not_a_changed_one(agiqa_images, quality_dir, tmp_path, hub_cache):
    out = tmp_path / "exported"
    assert perceptclip("export", out, "--model", quality_dir, "--format", "onnx", cwd=tmp_path).returncode == 0

    def predict(output: str) -> dict:
        """`perceptclip predict --model OUT --backend onnxruntime`: the output's record."""
        options = ("--model", out, "--backend", "onnxruntime", "--output", tmp_path / output)
        scored = perceptclip("predict", agiqa_images, *options, cwd=tmp_path)
        assert scored.returncode == 0, scored.stderr
        return json.loads((tmp_path / f"{output}.meta.json").read_text())

    record = predict("a.csv")
    assert not (hub_cache / "perceptclip-exports").exists()  # the folder's own onnx/model.onnx ran
    exported = json.loads((out / RECORD_FILE).read_text())["exports"]["onnx/model.onnx"]
    assert record["runtime"]["export"] == exported["sha256"]
    with open(out / "onnx" / "model.onnx", "ab") as handle:  # changed since it was validated: not used
        handle.write(b"\0")
    record = predict("b.csv")
    assert len(list((hub_cache / "perceptclip-exports").iterdir())) == 1  # exported again, into the cache
    assert record["runtime"]["export"] == exported["sha256"]  # the export is deterministic: the same file again


def test_backend_and_precision_mistakes_are_one_line_before_any_model_loads(quality_dir, tmp_path, monkeypatch):
    image = tmp_path / "a.png"
    procedural_images(1, size=64)[0].save(image)
    onnx_bf16 = "--dtype bf16 does not run on --backend onnxruntime (it runs fp32, int8); --backend torch or "
    torch_int8 = "--dtype int8 does not run on --backend torch (it runs fp32, bf16, fp16); --backend onnxruntime "
    cases = [
        (("--backend", "onnxruntime", "--dtype", "bf16"), onnx_bf16 + "openvino runs bf16"),
        (("--backend", "torch", "--dtype", "int8"), torch_int8 + "runs int8"),
        (
            ("--backend", "openvino", "--device", "cuda"),
            "--backend openvino runs on the CPU; --device cuda is for --ba",
        ),
    ]
    monkeypatch.setattr("perceptclip_hf.scoring.model_set.load_model", lambda *a, **k: pytest.fail("a model loaded"))
    for options, message in cases:
        result = perceptclip("predict", image, "--model", quality_dir, *options, cwd=tmp_path)
        assert result.returncode == 2 and message in result.stderr, result.stderr
    real_find_spec = __import__("importlib.util").util.find_spec
    monkeypatch.setattr(
        "importlib.util.find_spec", lambda name, *a: None if name == "openvino" else real_find_spec(name, *a)
    )
    result = perceptclip("predict", image, "--model", quality_dir, "--backend", "openvino", cwd=tmp_path)
    assert (
        result.returncode == 2
        and "--backend openvino needs openvino: pip install 'perceptclip-hf[openvino]'" in result.stderr
    )


# ----- --backend auto ----------------------------------------------------------------------------------------------


class SlowModel(torch.nn.Module):
    """Logits = the mean pixel of each view, computed slowly: the torch fp32 every candidate is timed against."""

    def forward(self, pixels):
        time.sleep(0.02)
        return SimpleNamespace(logits=pixels.mean(dim=(1, 2, 3))[:, None])


def test_auto_keeps_the_fastest_candidate_that_passes_the_gate_else_torch_fp32(monkeypatch):
    from perceptclip_hf.backends import probe

    pixels = torch.randn(24, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    exact = lambda views: views.mean(dim=(1, 2, 3))[:, None].numpy()  # noqa: E731
    wild = lambda views: np.random.default_rng(0).normal(size=(len(views), 1))  # noqa: E731 - fast, ranks lost
    close = lambda views: exact(views) + 1e-6 * np.arange(len(views))[:, None]  # noqa: E731 - keeps the ranking
    runners = {("onnxruntime", "int8"): wild, ("openvino", "bf16"): close, ("torch", "bf16"): exact}
    monkeypatch.setattr(probe, "candidates", lambda precision: list(runners))
    monkeypatch.setattr(probe, "runner", lambda model, f, s, backend, precision, folder: runners[backend, precision])
    choice = probe.probe(SlowModel(), "f", (8, 8), pixels, False, None, None)
    assert (choice.backend, choice.precision) in {("openvino", "bf16"), ("torch", "bf16")} and choice.speedup > 1
    assert choice.spearman >= 0.99 and len(choice.measured) == 4
    assert "onnxruntime int8" in choice.measured[1] and "refused: Spearman" in choice.measured[1]
    runners = {("onnxruntime", "int8"): wild}
    fallback = probe.probe(SlowModel(), "f", (8, 8), pixels, False, None, None)
    assert (fallback.backend, fallback.precision, fallback.spearman) == ("torch", "fp32", None)
    assert fallback.text() == "torch fp32 (nothing faster passed the agreement gate)"


def test_auto_measures_once_per_machine_and_model_then_reuses_and_records_its_choice(
    agiqa_images, quality_dir, tmp_path, hub_cache
):
    options = ("--model", quality_dir, "--backend", "auto", "--tta", "3", "--num-workers", "0")
    first = openvino_process(
        "predict", agiqa_images, *options, "--output", tmp_path / "a.csv", cwd=tmp_path, hub_cache=hub_cache
    )
    assert first.returncode == 0, first.stderr
    chosen = [line for line in first.stderr.splitlines() if line.startswith("backend: ")]
    assert len(chosen) == 1 and "measured now" in chosen[0], first.stderr
    choices = json.loads((hub_cache / "perceptclip-exports" / "choices.json").read_text())
    (entry,) = choices.values()
    assert entry["measured"][0].startswith("torch fp32: 1.00×")
    tried = " ".join(entry["measured"])
    assert all(name in tried for name in ("torch bf16", "onnxruntime fp32", "onnxruntime int8", "openvino fp32"))
    second = openvino_process(
        "predict", agiqa_images, *options, "--output", tmp_path / "b.csv", cwd=tmp_path, hub_cache=hub_cache
    )
    assert second.returncode == 0, second.stderr
    again = [line for line in second.stderr.splitlines() if line.startswith("backend: ")]
    assert len(again) == 1 and "as measured on this machine before" in again[0]
    assert again[0].split(", as measured")[0] == chosen[0].split(", measured now")[0]
    record = json.loads((tmp_path / "b.csv.meta.json").read_text())
    assert (record["runtime"]["backend"], record["runtime"]["precision"]) == (entry["backend"], entry["precision"])
    assert record["runs"][0]["backend_auto"] == again[0].removeprefix("backend: ").split(", as measured")[0]
    assert score_rows(tmp_path / "a.csv") == score_rows(tmp_path / "b.csv")  # the same backend: the same rows


def test_push_to_hub_onnx_adds_the_validated_export_to_the_repo_folder(quality_dir, tmp_path):
    from perceptclip_hf.cli.push import main as push_to_hub
    from perceptclip_hf.hub.repo import check_repo_folder

    repo = tmp_path / "repo"
    assert push_to_hub(["--model-dir", str(quality_dir), "--repo-id", "me/q", "--onnx", "--dry-run", str(repo)]) == 0
    check_repo_folder(repo)  # complete and pickle-free, the export beside the model
    record = json.loads((repo / RECORD_FILE).read_text())
    assert "onnx/model.onnx" in record["exports"] and set(record["exports"]) <= {
        "onnx/model.onnx",
        "onnx/model_quantized.onnx",
    }
    pixels = torch.randn(2, 3, *record["image_size"], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = AutoModel.from_pretrained(repo).eval()(pixels).logits.numpy()
    session = onnxruntime.InferenceSession(str(repo / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"pixel_values": pixels.numpy()})[0], expected, atol=1e-4)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["repo"]  # no staging folder left
