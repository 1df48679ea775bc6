"""Hub publishing: the repo folder (`push_to_hub.py --dry-run`), its model card, the peft adapter, the upload commit
(fake Hub client) and the conversion of official checkpoints. Nothing here reaches the network."""

import copy
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image
from safetensors import safe_open
from transformers import AutoImageProcessor, AutoModel, CLIPVisionModelWithProjection

import push_to_hub
from perceptclip_hf import EMOTION_LABELS, PerceptCLIPConfig, PerceptCLIPForRegression
from perceptclip_hf.hub import repo
from perceptclip_hf.hub.official import convert_official
from perceptclip_hf.hub.repo import build_repo_folder, check_repo_folder, upload_repo_folder
from tests.helpers.cli import run_python
from tests.helpers.models import (
    BLOCK_PACKAGE,
    OFFICIAL_EMOTIONS,
    TINY_HEAD,
    OfficialCLIPLoRAModel,
    randomize_lora,
    tiny_clip_config,
)
from tests.helpers.paths import REPO_ROOT

REPO_ID = "me/x"
RESULTS = {
    "dataset": "koniq10k",
    "task": "quality",
    "metric_aggregation": "median",
    "splits": [
        {"split": 0, "test": {"srcc": 0.931, "plcc": 0.942, "krcc": 0.781, "mse": 0.104}},
        {"split": 1, "test": {"srcc": 0.945, "plcc": 0.951, "krcc": 0.803, "mse": 0.093}},
        {"split": 2, "test": {"srcc": 0.940, "plcc": 0.957, "krcc": 0.792, "mse": 0.099}},
    ],
    "aggregate": {"srcc": 0.940, "plcc": 0.951, "krcc": 0.792, "mse": 0.099},
    "training": {
        "learning_rate": 1e-4,
        "epochs": 40,
        "batch_size": 32,
        "weight_decay": 1e-4,
        "loss": "plcc",
        "base_model": "openai/clip-vit-large-patch14",
    },
}
PICKLE_SUFFIXES = (".bin", ".pth", ".pt", ".pkl")
MB = 1e6


@pytest.fixture(scope="module")
def run(tiny_clip_base, tmp_path_factory):
    """A training run dir (`model/` + `results.json`) and the run's outputs on fixed pixels and one image."""
    root = tmp_path_factory.mktemp("run")
    model = PerceptCLIPForRegression.from_backbone(str(tiny_clip_base), task="quality", **TINY_HEAD).eval()
    randomize_lora(model, seed=1)
    model.save_pretrained(root / "model")
    (root / "results.json").write_text(json.dumps(RESULTS))
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (45, 37, 3), dtype=np.uint8))
    image.save(root / "image.png")
    image_pixels = AutoImageProcessor.from_pretrained(root / "model")(images=image, return_tensors="pt")
    with torch.no_grad():
        outputs = model(pixels)
        image_score = model(**image_pixels).logits[0, 0]
    torch.save(
        {"pixels": pixels, "logits": outputs.logits, "image_embeds": outputs.image_embeds, "image_score": image_score},
        root / "expected.pt",
    )
    return root


@pytest.fixture(scope="module")
def published(run, tmp_path_factory):
    """`python push_to_hub.py --run-dir <run> --repo-id me/x --dry-run <out>`, run as a user would."""
    out = tmp_path_factory.mktemp("published") / "repo"
    result = subprocess.run(
        [
            sys.executable,
            "push_to_hub.py",
            "--run-dir",
            str(run),
            "--repo-id",
            REPO_ID,
            "--dry-run",
            str(out),
            "--peft-adapter",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return out


def python_blocks(card_text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", card_text, flags=re.S)


# ----- acceptance 1 + 3: a Hub user's process reproduces the run, the card's snippet runs as written ------------


def test_published_folder_reproduces_the_run_without_the_package(published, run):
    (snippet,) = python_blocks((published / "README.md").read_text())
    assert f'"{REPO_ID}"' in snippet and "trust_remote_code=True" in snippet
    code = (
        BLOCK_PACKAGE
        + f"""
import torch
from PIL import Image
from transformers import AutoModel, pipeline
try:
    import perceptclip_hf
    raise SystemExit("package should be hidden")
except ImportError:
    pass
folder, expected = {str(published)!r}, torch.load({str(run / "expected.pt")!r})
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
with torch.no_grad():
    delta = (model(expected["pixels"]).logits - expected["logits"]).abs().max().item()
assert delta < 1e-6, delta
scores = pipeline("image-classification", model=folder, trust_remote_code=True)(Image.open({str(run / "image.png")!r}))
assert scores[0]["label"] == "quality" and abs(scores[0]["score"] - expected["image_score"].item()) < 1e-6, scores
print("REPRODUCED")
# The card's usage snippet, as written, with the repo id pointing at the local folder.
exec({snippet.replace(REPO_ID, str(published))!r})
"""
    )
    out = run_python(code).stdout
    assert "REPRODUCED" in out
    assert re.search(r"^quality: -?\d+\.\d{4}$", out, flags=re.M), out  # the snippet's own print


# ----- folder contents -----------------------------------------------------------------------------------------


def test_folder_holds_config_remote_code_weights_processor_adapter_and_card(published, run, tiny_clip_base, tmp_path):
    files = {p.relative_to(published).as_posix() for p in published.rglob("*") if p.is_file()}
    assert files == {
        "README.md",
        "config.json",
        "configuration_perceptclip.py",
        "modeling_perceptclip.py",
        "model.safetensors",
        "image_processing_perceptclip.py",
        "loss_perceptclip.py",
        "backbone_perceptclip.py",
        "preprocessor_config.json",
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
    }
    # The remote code is what the model's save_pretrained copies, byte for byte the package's `modeling/` files.
    model = PerceptCLIPForRegression.from_pretrained(run / "model").eval()
    model.save_pretrained(tmp_path / "saved")
    copied = sorted(p.name for p in (tmp_path / "saved").glob("*.py"))
    assert copied == sorted(p.name for p in published.glob("*.py"))
    for name in copied:
        assert (published / name).read_bytes() == (REPO_ROOT / "modeling" / name).read_bytes()
    config = json.loads((published / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_perceptclip.PerceptCLIPForRegression"
    assert config["auto_map"]["AutoModelForImageClassification"] == "modeling_perceptclip.PerceptCLIPForRegression"
    assert config["adapter_only"] is True and config["base_model_name_or_path"] == str(tiny_clip_base)
    assert (published / "model.safetensors").read_bytes() == (run / "model" / "model.safetensors").read_bytes()
    assert check_repo_folder(published)


def test_peft_adapter_on_the_base_gives_the_models_image_embeds(published, run, tiny_clip_base):
    from peft import PeftModel

    expected = torch.load(run / "expected.pt")
    base = CLIPVisionModelWithProjection.from_pretrained(tiny_clip_base).eval()
    with torch.no_grad():
        base_embeds = base(pixel_values=expected["pixels"]).image_embeds
        adapted = PeftModel.from_pretrained(base, published / "adapter").eval()  # injects the LoRA into `base`
        embeds = adapted(pixel_values=expected["pixels"]).image_embeds
    assert (embeds - expected["image_embeds"]).abs().max().item() < 1e-6
    assert (embeds - base_embeds).abs().max().item() > 1e-3  # the LoRA is applied
    adapter_config = json.loads((published / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["r"] == 16 and adapter_config["lora_alpha"] == 8
    assert set(adapter_config["target_modules"]) == {"q_proj", "k_proj", "v_proj"}


def test_stale_remote_code_in_a_model_dir_is_replaced_by_the_packages(run, tmp_path, caplog):
    model_dir = tmp_path / "model"
    shutil.copytree(run / "model", model_dir)
    with (model_dir / "modeling_perceptclip.py").open("a") as handle:
        handle.write("# an older copy\n")
    folder = build_repo_folder(model_dir, tmp_path / "repo", repo_id=REPO_ID, peft_adapter=False)
    assert (folder / "modeling_perceptclip.py").read_bytes() == (
        REPO_ROOT / "modeling/modeling_perceptclip.py"
    ).read_bytes()
    assert "differs from this package's modeling_perceptclip.py" in caplog.text


def test_pickles_are_refused(published, tmp_path):
    folder = tmp_path / "repo"
    shutil.copytree(published, folder)
    torch.save({"w": torch.zeros(1)}, folder / "extra.safetensors.bak")
    with pytest.raises(ValueError, match="pickle"):
        check_repo_folder(folder)


# ----- acceptance 2: ViT-L/14 --------------------------------------------------------------------------------


def test_vit_l14_folder_is_adapter_sized_and_pickle_free(tmp_path):
    model = PerceptCLIPForRegression(PerceptCLIPConfig()).eval()  # CLIP ViT-L/14, random weights (~8 s)
    sizes = {}
    for name, peft_adapter in (("with_adapter", True), ("model_only", False)):
        folder = build_repo_folder(model, tmp_path / name, repo_id=REPO_ID, peft_adapter=peft_adapter)
        files = [p for p in folder.rglob("*") if p.is_file()]
        weights = [p for p in files if p.suffix not in (".py", ".json", ".md")]
        assert weights and all(p.suffix == ".safetensors" for p in weights), weights
        for path in files:
            assert path.suffix not in PICKLE_SUFFIXES and (path in weights or not repo.is_pickle(path)), path
        for path in weights:
            with safe_open(path, framework="pt") as handle:  # parses as safetensors
                assert handle.keys()
        sizes[name] = {p.relative_to(folder).as_posix(): p.stat().st_size for p in weights}
        assert ModelCard.load(folder / "README.md").data.base_model == "openai/clip-vit-large-patch14"
    # The default folder (no peft adapter): LoRA + head, ~11.5 MB (full model: ~1.2 GB).
    assert sum(sizes["model_only"].values()) <= 15 * MB, sizes
    assert sizes["with_adapter"]["model.safetensors"] <= 15 * MB
    # The opt-in peft adapter repeats the LoRA (~9.4 MB) for peft users: the folder with it is ~21 MB.
    assert (
        sizes["with_adapter"]["adapter/adapter_model.safetensors"] < 0.85 * sizes["with_adapter"]["model.safetensors"]
    )


# ----- acceptance 3: the card ----------------------------------------------------------------------------------


def test_card_metadata_and_model_index_hold_the_runs_metrics(published):
    card = ModelCard.load(published / "README.md")
    data = card.data
    assert data.library_name == "transformers" and data.pipeline_tag == "image-classification"
    assert data.license == "mit" and data.datasets == ["koniq10k"]
    assert {"perceptclip", "clip", "lora", "image-quality-assessment"} <= set(data.tags)
    assert data.base_model is None  # the run's base is a local dir, not a Hub id
    reported = {(r.dataset_type, r.metric_type): r.metric_value for r in data.eval_results}
    assert reported == {("koniq10k", k): v for k, v in RESULTS["aggregate"].items()}
    assert all(r.dataset_split == "test" and "median of 3 splits" in r.metric_name for r in data.eval_results)
    text = card.text
    assert "| 1 | 0.9450 | 0.9510 | 0.8030 | 0.0930 |" in text  # per-split table
    assert "| **mean** | 0.9387 |" in text and "| **median** | 0.9400 |" in text
    assert "| learning_rate | 0.0001 |" in text and "| loss | plcc |" in text
    assert "no pretrained CLIP weights were available" in text
    assert "arxiv.org/abs/2503.13260" in text and "Don't Judge Before You CLIP" in text and "Irani" in text


def test_multi_dataset_card_lists_every_dataset_and_head(tiny_clip_base, tmp_path):
    heads = {"koniq10k": 1, "livec": 1}
    model = PerceptCLIPForRegression.from_backbone(str(tiny_clip_base), task="quality", heads=heads, **TINY_HEAD)
    per_dataset = {k: v for k, v in RESULTS.items() if k not in ("dataset", "training")}
    results = {"datasets": {name: per_dataset for name in heads}, "training": RESULTS["training"]}
    folder = build_repo_folder(model, tmp_path / "repo", results=results, repo_id=REPO_ID, peft_adapter=False)
    card = ModelCard.load(folder / "README.md")
    assert {r.dataset_type for r in card.data.eval_results} == set(heads)
    assert card.data.datasets == list(heads)
    assert "**multi-dataset** model" in card.text and "### LIVE Challenge" in card.text
    (snippet,) = python_blocks(card.text)
    assert "head=head" in snippet and "['koniq10k', 'livec']" in snippet
    assert not (folder / "adapter").exists()
    exec(snippet.replace(REPO_ID, str(folder)), {})  # the multi-head snippet runs (package importable here)


# ----- acceptance 4: the upload --------------------------------------------------------------------------------


class FakeHfApi:
    """Records the Hub calls; reads every file of a commit when it is sent."""

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))
        return f"https://huggingface.co/{repo_id}"

    def create_branch(self, repo_id, **kwargs):
        self.calls.append(("create_branch", repo_id, kwargs))

    def create_commit(self, repo_id, operations, **kwargs):
        files = {}
        for operation in operations:
            with operation.as_file() as handle:
                files[operation.path_in_repo] = handle.read()
        self.calls.append(("create_commit", repo_id, {**kwargs, "files": files}))
        return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/0"})()


def folder_bytes(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_upload_sends_every_file_in_one_commit(published):
    api = FakeHfApi()
    upload_repo_folder(
        published, "me/x", token="hf_test", private=True, revision="v1", commit_message="Add KonIQ model", api=api
    )
    assert [call[0] for call in api.calls] == ["create_repo", "create_branch", "create_commit"]
    assert api.calls[0] == ("create_repo", "me/x", {"token": "hf_test", "private": True, "exist_ok": True})
    assert api.calls[1] == ("create_branch", "me/x", {"branch": "v1", "token": "hf_test", "exist_ok": True})
    _, repo_id, commit = api.calls[2]
    assert repo_id == "me/x" and commit.pop("files") == folder_bytes(published)
    assert commit == {"commit_message": "Add KonIQ model", "token": "hf_test", "revision": "v1"}


def test_cli_upload_uses_the_hub_client_once(run, published, monkeypatch):
    api = FakeHfApi()
    monkeypatch.setattr(repo, "HfApi", lambda: api)
    assert (
        push_to_hub.main(["--model-dir", str(run / "model"), "--repo-id", "me/y", "--private", "--peft-adapter"]) == 0
    )
    assert [call[0] for call in api.calls] == ["create_repo", "create_commit"]
    assert api.calls[0][2]["private"] is True
    files = api.calls[1][2]["files"]
    assert set(files) == set(folder_bytes(published))
    assert files["model.safetensors"] == (published / "model.safetensors").read_bytes()
    assert "model-index" not in files["README.md"].decode()  # a bare model dir: no results
    assert api.calls[1][2]["commit_message"] == "Upload PerceptCLIP model" and api.calls[1][2]["revision"] is None


# ----- acceptance 5: official checkpoints ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def official_emotion(tmp_path_factory):
    """An official-layout emotion `.pth`, its module, and its backbone saved as a base model."""
    root = tmp_path_factory.mktemp("official")
    torch.manual_seed(0)
    official = OfficialCLIPLoRAModel(len(EMOTION_LABELS)).eval()
    randomize_lora(official, seed=3)
    torch.save(official.state_dict(), root / "official.pth")
    base = CLIPVisionModelWithProjection(tiny_clip_config())
    base.vision_model.load_state_dict(copy.deepcopy(official.model).unload().state_dict())
    base.visual_projection.load_state_dict(official.proj.state_dict())
    base.save_pretrained(root / "base")
    (root / "config.json").write_text(json.dumps({"vision_config": tiny_clip_config().to_dict(), **TINY_HEAD}))
    return official, root


def test_from_official_writes_a_repo_matching_the_official_module(official_emotion, tmp_path):
    official, root = official_emotion
    out = tmp_path / "repo"
    assert (
        push_to_hub.main(
            [
                "--from-official",
                str(root / "official.pth"),
                "--task",
                "emotion",
                "--config-json",
                str(root / "config.json"),
                "--base-model",
                str(root / "base"),
                "--repo-id",
                "me/emotions",
                "--dry-run",
                str(out),
            ]
        )
        == 0
    )
    check_repo_folder(out)
    config = json.loads((out / "config.json").read_text())
    assert tuple(config["id2label"][str(i)] for i in range(8)) == OFFICIAL_EMOTIONS
    model = AutoModel.from_pretrained(out, trust_remote_code=True).eval()
    pixels = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert (model(pixels).logits - official(pixels)).abs().max().item() < 1e-5
    card = (out / "README.md").read_text()
    assert "Converted from the official PerceptCLIP release `official.pth`" in card
    (snippet,) = python_blocks(card)
    exec(snippet.replace("me/emotions", str(out)), {})  # the classification snippet runs (package importable here)


def test_from_official_refuses_a_base_that_is_not_the_checkpoints_backbone(official_emotion, tiny_clip_base, tmp_path):
    _, root = official_emotion
    config = PerceptCLIPConfig(task="emotion", vision_config=tiny_clip_config().to_dict(), **TINY_HEAD)
    with pytest.raises(ValueError, match="differs from its base"):
        convert_official(
            str(root / "official.pth"), tmp_path / "repo", "emotion", config=config, base_model=str(tiny_clip_base)
        )
    assert not (tmp_path / "repo").exists()
