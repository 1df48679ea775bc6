"""The official PerceptCLIP release (`clip_lora_model` state dicts in pickled `.pth` files) as ordinary models.

The official module (PerceptCLIP_IQA / _Memorability / _Emotions on the Hub) is
`model` = `get_peft_model(CLIPModel.vision_model, LoRA r=16 alpha=8 q/k/v)`, `proj` = CLIP's visual projection and
`mlp` = `fc1/fc2/fc3`. Its state dict maps onto our classes by renaming only.

:func:`official_model_dir` makes any official source usable wherever a model is accepted: an alias (`quality`,
`memorability`, `emotion`), an official Hub repo, a local folder holding one `.pth` and no `config.json`, or the
`.pth` itself. It is converted once (:func:`convert_official`, the same path as
`perceptclip push --from-official`) into an HF-native folder cached under
`$HF_HUB_CACHE/perceptclip-official/`, written atomically; later calls load that folder.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import pickle
import re
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from ..cache_folders import build_once, cache_root
from ..errors import ModelLoadError, is_offline_error
from .source import OFFICIAL_BASE_MODEL, OFFICIAL_TASKS, ModelSource, checkpoint_files, is_hub_model_id

if TYPE_CHECKING:  # torch and the model code load with the first checkpoint: the names above serve the CLI at once
    import torch

    from ..modeling import PerceptCLIPConfig, PerceptCLIPPreTrainedModel

logger = logging.getLogger(__name__)

# Config fields that reproduce each release's usage code where its task's default preprocessing does not: the IQA
# usage resizes with torchvision `Resize((512, 384))` (height, width; aspect not kept) before its 15 random crops.
# Memorability and emotion use `Resize(224)` + `CenterCrop(224)`, their task's own test transform.
OFFICIAL_PREPROCESSING = {"quality": {"test_resize_size": [512, 384]}}
CACHE_DIR_NAME = "perceptclip-official"
# Official key prefix → ours (the head's `mlp.fcN` are renamed by number).
OFFICIAL_KEY_PREFIXES = (
    ("model.base_model.model.", "backbone.vision_model."),
    ("proj.", "backbone.visual_projection."),
)
_MLP_KEY = re.compile(r"^mlp\.fc(\d+)\.(weight|bias)$")


# ----- state dict → model --------------------------------------------------------------------------------------


def convert_official_state_dict(state_dict: dict[str, torch.Tensor], head: str = "default") -> dict[str, torch.Tensor]:
    """Rename official keys to ours: `model.base_model.model.*` → `backbone.vision_model.*`,
    `proj.*` → `backbone.visual_projection.*`, `mlp.fcN.*` → `heads.<head>.layers.<N-1>.*`."""
    converted = {}
    for key, tensor in state_dict.items():
        match = _MLP_KEY.match(key)
        if match:
            converted[f"heads.{head}.layers.{int(match.group(1)) - 1}.{match.group(2)}"] = tensor
            continue
        for old, new in OFFICIAL_KEY_PREFIXES:
            if key.startswith(old):
                converted[new + key[len(old) :]] = tensor
                break
        else:
            raise KeyError(
                f"Unexpected key {key!r} in the official state dict (expected model.base_model.model.*, "
                "proj.*, mlp.fc*)."
            )
    return converted


def resolve_official_checkpoint(source: str, **hub_kwargs) -> str:
    """A local `.pth` path, or the single `.pth` file of a local copy of an official repo or of the repo itself
    (downloaded)."""
    if os.path.isfile(source):
        return source
    if os.path.isdir(source):
        return os.path.join(source, single_checkpoint(os.listdir(source), source))
    return locate_hub_checkpoint(source, **hub_kwargs)[1]()


def single_checkpoint(names, source: str) -> str:
    files = checkpoint_files(names)
    if len(files) != 1:
        raise ModelLoadError(f"{source}: expected exactly one .pth checkpoint in the repo, found {files}.")
    return files[0]


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """`torch.load(weights_only=True)`: tensors only, no code runs."""
    import torch

    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise ModelLoadError(
            f"{path}: not a readable weights_only state dict ({' '.join(str(err).split())[:300]})"
        ) from err
    if not isinstance(state_dict, dict):
        raise ModelLoadError(f"{path}: expected a state dict, got {type(state_dict).__name__}.")
    return state_dict


def official_task(state_dict: dict[str, torch.Tensor], task: str | None, source: str) -> str:
    """`task`, else inferred from the head's outputs: 8 → emotion; 1 output cannot tell IQA from memorability."""
    outputs = state_dict["mlp.fc3.weight"].shape[0] if "mlp.fc3.weight" in state_dict else None
    if task is None and outputs == 8:
        return "emotion"
    if task is None:
        raise ModelLoadError(
            f"{source}: an official checkpoint whose head has {outputs} output(s) may be image "
            "quality or memorability; say which with --task quality|memorability (Python: "
            "task='quality')"
        )
    return task


def official_config(state_dict: dict[str, torch.Tensor], task: str, base_model: str) -> PerceptCLIPConfig:
    """The architecture of an official checkpoint: the base CLIP's vision config, the head widths of its `mlp`."""
    from ..modeling import PerceptCLIPConfig, backbone_vision_config

    vision = backbone_vision_config(base_model)
    hidden = [state_dict[f"mlp.fc{i}.weight"].shape[0] for i in (1, 2) if f"mlp.fc{i}.weight" in state_dict]
    return PerceptCLIPConfig(
        task=task, vision_config=vision.to_dict(), base_model_name_or_path=base_model, head_hidden_sizes=hidden or None
    )


def with_official_preprocessing(config: PerceptCLIPConfig) -> PerceptCLIPConfig:
    """`config` with its release's usage-code preprocessing (`OFFICIAL_PREPROCESSING`), unless it sets a resize."""
    if config.test_resize_size is None and config.test_resize_short is None:
        for field, value in OFFICIAL_PREPROCESSING.get(config.task, {}).items():
            setattr(config, field, copy.deepcopy(value))
    return config


def load_official_checkpoint(
    source: str,
    task: str | None = None,
    config: PerceptCLIPConfig | None = None,
    base_model: str | None = None,
    **hub_kwargs,
) -> PerceptCLIPPreTrainedModel:
    """Build our model from an official checkpoint (`task` = quality | memorability | emotion; inferred for an
    official repo or an 8-output head).

    The file is read with `torch.load(weights_only=True)`: tensors only, no code runs. `config` overrides the
    architecture (tests use tiny ones); by default it is `base_model`'s vision tower (default CLIP ViT-L/14) with the
    checkpoint's head widths. The config carries the official preprocessing (:func:`with_official_preprocessing`).
    Emotion labels are in the official order (amusement, awe, contentment, excitement, anger, disgust, fear, sadness).
    """
    from ..modeling import create_model

    path = resolve_official_checkpoint(source, **hub_kwargs)
    state_dict = read_state_dict(path)
    task = official_task(state_dict, task or OFFICIAL_TASKS.get(source) or (config.task if config else None), source)
    if config is None:
        config = official_config(state_dict, task, base_model or OFFICIAL_BASE_MODEL)
    else:
        config = copy.deepcopy(config)
        config.base_model_name_or_path = base_model or config.base_model_name_or_path
    model = create_model(with_official_preprocessing(config))
    outputs = state_dict["mlp.fc3.weight"].shape[0] if "mlp.fc3.weight" in state_dict else 0
    if outputs != config.head_sizes[config.default_head]:
        raise ModelLoadError(
            f"{source}: the checkpoint's head has {outputs} outputs, task {task!r} needs "
            f"{config.head_sizes[config.default_head]}; check --task"
        )
    converted = convert_official_state_dict(state_dict, head=config.default_head)
    try:
        result = model.load_state_dict(converted, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise ModelLoadError(
            f"{path}: the checkpoint does not fit the architecture of its base model "
            f"{config.base_model_name_or_path} ({' '.join(str(err).split())[:300]}); pass the base "
            "it was trained on (--base-model)"
        ) from err
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{path}: official checkpoint does not fit the config: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}."
        )
    return model.eval()


# ----- where an official checkpoint is -------------------------------------------------------------------------


def locate_hub_checkpoint(
    repo_id: str, revision: str | None = None, token: str | None = None
) -> tuple[str, Callable[[], str]]:
    """`(commit, download)` of an official Hub repo: `download()` gives its `.pth` path. Without the Hub, the
    commit and file come from the local Hub cache; with neither, the Hub's offline error is raised (callers report
    it with :func:`perceptclip_hf.errors.loading_model`)."""
    from huggingface_hub import HfApi, hf_hub_download

    try:
        info = HfApi().model_info(repo_id, revision=revision, token=token)
        commit, names = info.sha, [sibling.rfilename for sibling in info.siblings or []]
    except Exception as err:
        if not is_offline_error(err):
            raise
        commit, names = cached_snapshot(repo_id, revision)
        if commit is None:
            raise
    name = single_checkpoint(names, repo_id)
    return commit, lambda: hf_hub_download(repo_id, name, revision=commit, token=token)


def cached_snapshot(repo_id: str, revision: str | None) -> tuple[str | None, list[str]]:
    """The commit `revision` (default main) points to in the local Hub cache, and its files (`(None, [])` if absent)."""
    from huggingface_hub import constants

    repo_dir = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"
    revision = revision or "main"
    ref = repo_dir / "refs" / revision
    commit = ref.read_text().strip() if ref.is_file() else revision if re.fullmatch(r"[0-9a-f]{40}", revision) else None
    snapshot = repo_dir / "snapshots" / str(commit)
    return (commit, os.listdir(snapshot)) if commit and snapshot.is_dir() else (None, [])


# ----- the conversion cache ------------------------------------------------------------------------------------


def official_cache_root() -> Path:
    return cache_root(CACHE_DIR_NAME)


def official_model_dir(
    source: ModelSource | str,
    task: str | None = None,
    base_model: str | None = None,
    revision: str | None = None,
    token: str | None = None,
) -> Path:
    """The HF-native folder of an official checkpoint (alias, Hub repo, local folder or `.pth`), converted on the
    first call and cached: `$HF_HUB_CACHE/perceptclip-official/<name>-<key>/`, keyed by repo id + commit (Hub) or
    resolved path + size + mtime_ns of the `.pth` (local), and by task and base model. `task` applies to a source
    given as a string (a :class:`ModelSource` carries its own)."""
    source = ModelSource.of(source, task)
    task, source = source.task, source.location
    base_model = base_model or OFFICIAL_BASE_MODEL
    if os.path.isdir(base_model):
        base_model = os.path.abspath(base_model)
    if os.path.exists(source):
        path = resolve_official_checkpoint(source)
        stat = os.stat(path)
        identity, fetch = ("local", os.path.realpath(path), stat.st_size, stat.st_mtime_ns), (lambda: path)
        name = Path(path).stem
    else:
        commit, fetch = locate_hub_checkpoint(source, revision=revision, token=token)
        identity, name = ("hub", source, commit), f"{source.replace('/', '--')}-{commit[:12]}"
    key = hashlib.sha256(repr((identity, task, base_model)).encode()).hexdigest()[:16]
    folder = official_cache_root() / f"{name}-{key}"
    if (folder / "config.json").is_file():
        logger.info("Official checkpoint %s: using the converted copy %s", source, folder)
        return folder
    return convert_into_cache(fetch(), folder, task, base_model, origin=source)


def convert_into_cache(path: str, folder: Path, task: str | None, base_model: str, origin: str) -> Path:
    """Convert into a temporary sibling of `folder`, then rename it: a killed conversion leaves no `folder`."""
    logger.warning("Converting the official checkpoint %s once into %s", origin, folder)
    build = partial(convert_official, path, task=task, base_model=base_model, origin=origin)  # build(tmp)
    return build_once(folder, build, done="config.json")


def convert_official(
    source: str,
    out_dir: str | Path,
    task: str | None = None,
    config: PerceptCLIPConfig | None = None,
    repo_id: str | None = None,
    peft_adapter: bool = False,
    base_model: str | None = None,
    origin: str | None = None,
    **hub_kwargs,
) -> Path:
    """Write a repo folder for an official PerceptCLIP checkpoint (local `.pth` or official Hub repo): the one
    conversion behind `perceptclip push --from-official` and the official-model cache (`official.official_model_dir`).

    The repo is adapter-only, so the checkpoint's backbone must be its base's (`base_model`, else the config's
    `base_model_name_or_path`, else CLIP ViT-L/14): this is checked tensor by tensor before anything is written.
    The config carries the official preprocessing; `origin` names the source in the card (default `source`)."""
    from .repo import build_repo_folder

    model = load_official_checkpoint(source, task, config=config, base_model=base_model, **hub_kwargs)
    check_backbone_is_base(model)
    origin = origin or (Path(source).name if Path(source).is_file() else source)
    link = f"[{origin}](https://huggingface.co/{origin})" if is_hub_model_id(origin) else f"`{Path(origin).name}`"
    notes = (
        f"Converted from the official PerceptCLIP release {link} (weights renamed, not retrained); "
        "outputs match the official `clip_lora_model`."
    )
    return build_repo_folder(model, out_dir, repo_id=repo_id, peft_adapter=peft_adapter, notes=notes)


def check_backbone_is_base(model: PerceptCLIPPreTrainedModel, atol: float = 1e-6) -> None:
    """Raise unless the model's non-LoRA backbone tensors equal those of its `base_model_name_or_path` (which are
    then loaded into the model, as an adapter-only reload would)."""
    from ..modeling import LORA_KEY_MARKER

    own = {k: v.clone() for k, v in model.backbone.state_dict().items() if LORA_KEY_MARKER not in k}
    model.load_base_weights(model.config.base_model_name_or_path, revision=model.config.base_model_revision)
    base = model.backbone.state_dict()
    worst = max((own[k] - base[k]).abs().max().item() for k in own)
    if worst > atol:
        raise ValueError(
            f"The checkpoint's backbone differs from its base {model.config.base_model_name_or_path!r} "
            f"(max |Δ| = {worst:.3g}): an adapter-only repo would not reproduce it. Pass the right base model."
        )


__all__ = [
    "OFFICIAL_PREPROCESSING",
    "check_backbone_is_base",
    "convert_official",
    "convert_official_state_dict",
    "load_official_checkpoint",
    "official_model_dir",
]
