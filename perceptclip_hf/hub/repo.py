"""Publishing PerceptCLIP models on the Hugging Face Hub.

`build_repo_folder` writes everything a model repo holds (config with `auto_map`, the remote code, adapter-only
safetensors, the image processor, a standard peft adapter and the model card); `upload_repo_folder` sends that
folder as ONE commit. Safetensors only: a folder holding a pickle is refused.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path

import torch
from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi
from peft import LoraConfig
from safetensors import safe_open
from safetensors.torch import save_file

from .. import modeling
from ..errors import ModelLoadError
from ..modeling import (
    LORA_KEY_MARKER,
    PerceptCLIPConfig,
    PerceptCLIPPreTrainedModel,
    default_image_processor,
    lora_config,
)
from ..output_safety import check_free_folder
from ..run_layout import REPORT_DIR
from .model_card import render_model_card

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
CARD_FILE = "README.md"
ADAPTER_DIR = "adapter"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
# The remote code `save_pretrained` copies: the model and config modules (flattened), never `__init__.py`.
REMOTE_CODE_SOURCES = {
    path.name: path for path in sorted(Path(modeling.__file__).parent.glob("*.py")) if path.name != "__init__.py"
}
AUTO_MAP_KEYS = ("AutoConfig", "AutoModel", "AutoModelForImageClassification")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
# Pickle protocol ≥ 2 starts with 0x80; torch.save's zip archives with "PK\x03\x04".
PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")
PEFT_PREFIX = "base_model.model."
OUR_BACKBONE_PREFIX = "backbone."
PEFT_ADAPTER_NAME = "default"
DEFAULT_COMMIT_MESSAGE = "Upload PerceptCLIP model"


# ----- the repo folder -------------------------------------------------------------------------------------------


def build_repo_folder(
    model_dir_or_model: str | Path | PerceptCLIPPreTrainedModel,
    out_dir: str | Path,
    results: Mapping | str | Path | None = None,
    repo_id: str | None = None,
    peft_adapter: bool = False,
    notes: str | None = None,
) -> Path:
    """Write a Hub-ready PerceptCLIP repo into the new or empty `out_dir` and return it.

    `model_dir_or_model`: a saved model dir (its files are copied byte for byte) or a model (saved with
    `save_pretrained`). `results`: a training run's `results.json` (dict or path) for the card's model-index.
    `peft_adapter`: also write `adapter/`, a standard peft LoRA adapter of the backbone alone (heads not included).
    `notes`: an extra paragraph for the card (provenance)."""
    out_dir = Path(out_dir)
    check_free_folder(out_dir, "the repo folder")  # it must hold only what will be uploaded
    out_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(model_dir_or_model, PerceptCLIPPreTrainedModel):
        model_dir_or_model.save_pretrained(out_dir)
    else:
        copy_saved_model(Path(model_dir_or_model), out_dir)
    config = PerceptCLIPConfig.from_pretrained(out_dir)
    if peft_adapter:
        if config.adaptation == "lora":
            write_peft_adapter(config, load_lora_weights(out_dir), out_dir / ADAPTER_DIR)
        else:
            logger.warning("No peft adapter written: adaptation=%r has no LoRA.", config.adaptation)
    report = None
    if isinstance(results, (str, Path)):  # a run's results.json: its report/ comes along
        report = copy_run_report(Path(results).parent / REPORT_DIR, out_dir / REPORT_DIR)
        results = json.loads(Path(results).read_text())
    card = render_model_card(
        config,
        results=results,
        repo_id=repo_id,
        notes=notes,
        peft_adapter=(out_dir / ADAPTER_DIR).is_dir(),
        report=report,
    )
    card.save(out_dir / CARD_FILE)
    check_repo_folder(out_dir)
    return out_dir


def copy_run_report(report_dir: Path, out_dir: Path) -> str | None:
    """Copy a train.py run's summary report (PNG, report.md, report.html) into the repo; its folder name, or `None`
    when the run has none."""
    files = [path for path in sorted(report_dir.glob("*")) if path.suffix in (".png", ".md", ".html")]
    from ..reports import MARKDOWN_FILE

    if not any(path.name == MARKDOWN_FILE for path in files):
        return None
    out_dir.mkdir()
    for path in files:
        shutil.copyfile(path, out_dir / path.name)
    return out_dir.name


def copy_saved_model(model_dir: Path, out_dir: Path) -> None:
    """Copy a `save_pretrained` dir's config, safetensors weights and image processor; write the remote code
    from this package (a stale copy in `model_dir` is replaced, with a warning)."""
    if not (model_dir / CONFIG_FILE).is_file():
        raise ModelLoadError(f"{model_dir}: no {CONFIG_FILE}; expected a PerceptCLIP `save_pretrained` dir.")
    weights = sorted(model_dir.glob("*.safetensors")) + sorted(model_dir.glob(WEIGHTS_INDEX_FILE))
    if not weights:
        raise ModelLoadError(f"{model_dir}: no safetensors weights (pickled checkpoints are not published).")
    for path in [model_dir / CONFIG_FILE, *weights, model_dir / PREPROCESSOR_FILE]:
        if path.is_file():
            shutil.copyfile(path, out_dir / path.name)
    for name, source in REMOTE_CODE_SOURCES.items():
        saved = model_dir / name
        if saved.is_file() and saved.read_bytes() != source.read_bytes():
            logger.warning("%s differs from this package's %s; publishing the package's version.", saved, name)
        shutil.copyfile(source, out_dir / name)
    if not (out_dir / PREPROCESSOR_FILE).is_file():
        default_image_processor(PerceptCLIPConfig.from_pretrained(out_dir)).save_pretrained(out_dir)


def load_lora_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The LoRA tensors of the folder's top-level safetensors files (`model.safetensors` or its shards)."""
    tensors = {}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(path, framework="pt") as handle:
            tensors.update({key: handle.get_tensor(key) for key in handle.keys() if LORA_KEY_MARKER in key})
    return tensors


# ----- the peft adapter ------------------------------------------------------------------------------------------


def peft_lora_config(config: PerceptCLIPConfig) -> LoraConfig:
    """The peft `LoraConfig` of our backbone's LoRA (same r, alpha, dropout, targets; bias none)."""
    return lora_config(
        config,
        base_model_name_or_path=config.base_model_name_or_path,
        revision=config.base_model_revision,
        inference_mode=True,
    )


def to_peft_key(key: str) -> str:
    """`backbone.<module>.lora_A.default.weight` → `base_model.model.<module>.lora_A.weight`: the key a peft
    adapter file holds for the base model our backbone is (peft drops the adapter name when saving)."""
    module = key[len(OUR_BACKBONE_PREFIX) :].replace(f".{PEFT_ADAPTER_NAME}.", ".")
    return PEFT_PREFIX + module


def peft_adapter_state_dict(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The backbone's LoRA tensors of a PerceptCLIP state dict, under peft's adapter-file key names."""
    lora = {to_peft_key(k): v for k, v in weights.items() if k.startswith(OUR_BACKBONE_PREFIX) and LORA_KEY_MARKER in k}
    if not lora:
        raise ValueError("No LoRA tensors under `backbone.` in the weights: nothing to export as a peft adapter.")
    return lora


def write_peft_adapter(config: PerceptCLIPConfig, weights: Mapping[str, torch.Tensor], adapter_dir: Path) -> None:
    """Write `adapter_config.json` + `adapter_model.safetensors`: loadable with
    `PeftModel.from_pretrained(<base backbone>, adapter_dir)` (e.g. `CLIPVisionModelWithProjection`)."""
    adapter_dir.mkdir(parents=True, exist_ok=True)
    peft_lora_config(config).save_pretrained(adapter_dir)
    tensors = {k: v.contiguous() for k, v in peft_adapter_state_dict(weights).items()}
    save_file(tensors, adapter_dir / ADAPTER_WEIGHTS_FILE, metadata={"format": "pt"})


# ----- checks ----------------------------------------------------------------------------------------------------


def check_repo_folder(folder: str | Path) -> list[Path]:
    """Raise unless `folder` is a complete, pickle-free PerceptCLIP repo; return its files (relative paths)."""
    folder = Path(folder)
    files = sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
    required = {CONFIG_FILE, PREPROCESSOR_FILE, CARD_FILE, *REMOTE_CODE_SOURCES}
    missing = sorted(required - {p.as_posix() for p in files})
    if missing or not list(folder.glob("*.safetensors")):
        raise ModelLoadError(f"{folder}: missing {missing or [WEIGHTS_FILE]}.")
    for relative in files:
        path = folder / relative
        if relative.suffix == ".safetensors":
            with safe_open(path, framework="pt"):  # raises unless the file is valid safetensors
                pass
        elif relative.suffix.lower() in PICKLE_SUFFIXES or is_pickle(path):
            raise ValueError(f"{path} is a pickle: only safetensors weights are published.")
    for name, source in REMOTE_CODE_SOURCES.items():
        if (folder / name).read_bytes() != source.read_bytes():
            raise ValueError(f"{folder / name} is not byte-identical to the package's {source}.")
    auto_map = json.loads((folder / CONFIG_FILE).read_text()).get("auto_map", {})
    if not set(AUTO_MAP_KEYS) <= set(auto_map):
        raise ValueError(f"{folder / CONFIG_FILE}: auto_map {auto_map} lacks one of {AUTO_MAP_KEYS}.")
    return files


def is_pickle(path: Path) -> bool:
    """Whether the file starts like a pickle or a `torch.save` zip archive."""
    with path.open("rb") as handle:
        head = handle.read(4)
    return head.startswith(PICKLE_MAGIC)


# ----- upload ----------------------------------------------------------------------------------------------------


def upload_repo_folder(
    folder: str | Path,
    repo_id: str,
    token: str | None = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
    api: HfApi | None = None,
) -> CommitInfo:
    """Create `repo_id` if needed (and the branch `revision`) and upload every file of `folder` in ONE commit.
    `api`: an `HfApi`-like client (tests pass a fake); by default `HfApi()` (honours `HF_ENDPOINT`)."""
    folder = Path(folder)
    files = check_repo_folder(folder)
    api = api or HfApi()
    api.create_repo(repo_id, token=token, private=private, exist_ok=True)
    if revision:
        api.create_branch(repo_id, branch=revision, token=token, exist_ok=True)
    operations = [
        CommitOperationAdd(path_in_repo=relative.as_posix(), path_or_fileobj=str(folder / relative))
        for relative in files
    ]
    return api.create_commit(repo_id, operations, commit_message=commit_message, token=token, revision=revision)


__all__ = [
    "build_repo_folder",
    "check_repo_folder",
    "peft_adapter_state_dict",
    "peft_lora_config",
    "upload_repo_folder",
    "write_peft_adapter",
]
