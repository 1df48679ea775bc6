"""The PerceptCLIP remote code (shipped to the Hub beside the weights); installed as `perceptclip_hf.modeling`."""

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
    "ADAPTER_KEY_MARKERS", "CHOICES", "CLASSIFICATION_PROBLEM_TYPES", "EMOTION_LABELS", "LORA_KEY_MARKER", "LOSSES",
    "TASK_PRESETS", "PerceptCLIPConfig", "PerceptCLIPForClassification", "PerceptCLIPForRegression",
    "PerceptCLIPOutput", "PerceptCLIPPreTrainedModel", "backbone_vision_config", "check_config", "create_model",
    "default_image_processor", "get_loss_fn", "lora_config", "plcc_loss", "task_loss",
]
