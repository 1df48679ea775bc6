"""The official PerceptCLIP release in miniature: a tiny CLIP, the official `clip_lora_model` re-typed, its `.pth`
files in the official layout, and a Hugging Face cache holding them as the official repos (what `--model quality`
downloads), for code that runs offline as a user with the Hub would."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPModel

from tests.helpers.models import TINY_TOWER, OfficialMLP, randomize_lora

MODELING_PY = '''"""The official usage module (never imported here: only the .pth is read)."""
class clip_lora_model: ...
'''
# The official releases: task, head outputs, checkpoint file, Hub repo.
RELEASES = (
    ("quality", 1, "perceptCLIP_IQA.pth", "PerceptCLIP/PerceptCLIP_IQA"),
    ("emotion", 8, "perceptCLIP_Emotions.pth", "PerceptCLIP/PerceptCLIP_Emotions"),
)
BASE_REPO = "openai/clip-vit-large-patch14"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def tiny_clip() -> CLIPModel:
    text = dict(TINY_TOWER, num_hidden_layers=1, vocab_size=99, max_position_embeddings=16)
    text.update(bos_token_id=0, eos_token_id=1, pad_token_id=1)
    vision = dict(TINY_TOWER, image_size=224, patch_size=32)
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=24))


class ClipLoraModel(torch.nn.Module):
    """The official `clip_lora_model`: peft-wrapped `CLIPModel.vision_model`, `proj`, `mlp` (fc1/fc2/fc3)."""

    def __init__(self, clip: CLIPModel, output_dim: int):
        from peft import LoraConfig, get_peft_model

        super().__init__()
        lora = LoraConfig(
            r=16, lora_alpha=8, lora_dropout=0.1, target_modules=["k_proj", "v_proj", "q_proj"], bias="none"
        )
        self.model = get_peft_model(clip.vision_model, lora)
        self.proj = clip.visual_projection
        self.mlp = OfficialMLP(clip.config.projection_dim, 16, 8, output_dim)

    def forward(self, x):
        return self.mlp(self.proj(self.model(x)[1]))


def write_release(root: Path) -> tuple[CLIPModel, dict[str, ClipLoraModel]]:
    """`root/clip` (the tiny CLIP, saved) and, per release, `root/<task>/` as the official repo holds it (`.pth` +
    `modeling.py`); returns the CLIP and the official modules."""
    torch.manual_seed(0)
    clip = tiny_clip().eval()
    clip.save_pretrained(root / "clip")
    modules = {}
    for task, outputs, name, _ in RELEASES:
        module = ClipLoraModel(copy.deepcopy(clip), outputs)  # peft wraps in place: the saved CLIP stays bare
        randomize_lora(module, seed=outputs)  # LoRA B non-zero: not the identity
        module.eval()
        (root / task).mkdir()
        torch.save(module.state_dict(), root / task / name)
        (root / task / "modeling.py").write_text(MODELING_PY)
        modules[task] = module
    return clip, modules


def hub_cache_with_the_releases(release: Path, cache: Path) -> Path:
    """A Hugging Face hub cache (`HF_HUB_CACHE`) holding the official repos and the tiny CLIP as the base model
    `openai/clip-vit-large-patch14`, as `hf download` leaves them: used offline (`HF_HUB_OFFLINE=1`)."""
    repos = {repo: release / task for task, _, _, repo in RELEASES} | {BASE_REPO: release / "clip"}
    for repo, folder in repos.items():
        repo_dir = cache / f"models--{repo.replace('/', '--')}"
        snapshot = repo_dir / "snapshots" / COMMIT
        snapshot.mkdir(parents=True)
        for path in folder.iterdir():
            (snapshot / path.name).write_bytes(path.read_bytes())
        (repo_dir / "refs").mkdir()
        (repo_dir / "refs" / "main").write_text(COMMIT)
    return cache
