"""The PerceptCLIP remote code (shipped to the Hub beside the weights); installed as `perceptclip_hf.modeling`.

Importing this package (never shipped: the Hub gets the sibling files only) registers the PerceptCLIP classes with
the transformers Auto classes, so `AutoModel.from_pretrained(dir)` resolves them locally.
"""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    CLIPImageProcessorPil,
)

from .backbone_perceptclip import LORA_KEY_MARKER, backbone_vision_config
from .configuration_perceptclip import (
    CHOICES,
    CLASSIFICATION_PROBLEM_TYPES,
    EMOTION_LABELS,
    TASK_PRESETS,
    PerceptCLIPConfig,
    check_config,
)
from .image_processing_perceptclip import default_image_processor
from .loss_perceptclip import LOSSES, get_loss_fn, plcc_loss, task_loss
from .modeling_perceptclip import (
    ADAPTER_KEY_MARKERS,
    PerceptCLIPForClassification,
    PerceptCLIPForRegression,
    PerceptCLIPOutput,
    PerceptCLIPPreTrainedModel,
    create_model,
    lora_config,
)

__all__ = [
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
]

# Both task classes share one config class; the Auto factories pick between them by `config.architectures`.
TASK_MODEL_CLASSES = (PerceptCLIPForRegression, PerceptCLIPForClassification)


def register_auto_classes() -> None:
    """Make AutoConfig / AutoModel / AutoModelForImageClassification / AutoImageProcessor resolve PerceptCLIP
    locally (idempotent). A tuple of classes is transformers' own way to let `architectures` choose."""
    AutoConfig.register(PerceptCLIPConfig.model_type, PerceptCLIPConfig, exist_ok=True)
    for auto_class in (AutoModel, AutoModelForImageClassification):
        auto_class._model_mapping.register(PerceptCLIPConfig, TASK_MODEL_CLASSES, exist_ok=True)
    AutoImageProcessor.register(
        PerceptCLIPConfig, image_processor_classes={"pil": CLIPImageProcessorPil}, exist_ok=True
    )


register_auto_classes()
