"""perceptclip-hf: PerceptCLIP (arXiv 2503.13260) as a Hugging Face-native package.

`import perceptclip_hf` is light: torch and transformers load on the first use of a model-side name (PEP 562 lazy
attributes, as transformers' own `__init__` does), so `perceptclip --help` starts at once.

The PerceptCLIP classes are registered with the transformers Auto classes when the model code is first imported:
`from perceptclip_hf import PerceptCLIPForRegression` (any model class), `PerceptScorer`, or any command that loads a
model. From then on `AutoModel.from_pretrained(dir)` / `pipeline(...)` resolve our classes locally; call
:func:`register_auto_classes` to do it explicitly. Without the package, `trust_remote_code=True` loads the same
classes from the files shipped beside the weights.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name → the submodule that defines it; imported on first access.
_LAZY_NAMES = {
    **dict.fromkeys(
        (
            "ADAPTER_KEY_MARKERS",
            "CHOICES",
            "CLASSIFICATION_PROBLEM_TYPES",
            "EMOTION_LABELS",
            "LORA_KEY_MARKER",
            "LOSSES",
            "TASK_PRESETS",
            "PerceptCLIPConfig",
            "PerceptCLIPForClassification",
            "PerceptCLIPForRegression",
            "PerceptCLIPOutput",
            "PerceptCLIPPreTrainedModel",
            "backbone_vision_config",
            "check_config",
            "create_model",
            "default_image_processor",
            "get_loss_fn",
            "lora_config",
            "plcc_loss",
            "register_auto_classes",
            "task_loss",
        ),
        "modeling",
    ),
    "PerceptScorer": "inference",
    "ScorerSet": "model_set",
}

__all__ = [*_LAZY_NAMES, "__version__"]


def __getattr__(name: str) -> Any:
    module = _LAZY_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY_NAMES})


if TYPE_CHECKING:  # static analysers and IDEs see the real names
    from .inference import PerceptScorer  # noqa: F401
    from .model_set import ScorerSet  # noqa: F401
    from .modeling import *  # noqa: F403
