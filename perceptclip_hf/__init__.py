"""perceptclip-hf: PerceptCLIP (arXiv 2503.13260) as a Hugging Face-native package.

Importing the package registers the PerceptCLIP classes with the transformers Auto classes, so
`AutoModel.from_pretrained(dir)` works without `trust_remote_code` when the package is installed.
"""

from .modeling import (
    EMOTION_LABELS,
    TASK_PRESETS,
    PerceptCLIPConfig,
    PerceptCLIPForClassification,
    PerceptCLIPForRegression,
    PerceptCLIPOutput,
    PerceptCLIPPreTrainedModel,
    default_image_processor,
    plcc_loss,
)
from .auto import register_auto_classes

__version__ = "0.1.0"

register_auto_classes()
