"""The PerceptCLIP remote code (shipped to the Hub beside the weights); installed as `perceptclip_hf.modeling`."""

from .configuration_perceptclip import EMOTION_LABELS, TASK_PRESETS, PerceptCLIPConfig
from .modeling_perceptclip import (
    PerceptCLIPForClassification,
    PerceptCLIPForRegression,
    PerceptCLIPOutput,
    PerceptCLIPPreTrainedModel,
    default_image_processor,
    plcc_loss,
)

__all__ = [
    "EMOTION_LABELS", "TASK_PRESETS", "PerceptCLIPConfig", "PerceptCLIPForClassification", "PerceptCLIPForRegression",
    "PerceptCLIPOutput", "PerceptCLIPPreTrainedModel", "default_image_processor", "plcc_loss",
]
