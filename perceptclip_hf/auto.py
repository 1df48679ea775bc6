"""Registration of the PerceptCLIP classes with the transformers Auto classes."""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    CLIPImageProcessorPil,
)

from .modeling import PerceptCLIPConfig, PerceptCLIPForClassification, PerceptCLIPForRegression

# Both task classes share one config class; the Auto factories pick between them by `config.architectures`.
TASK_MODEL_CLASSES = (PerceptCLIPForRegression, PerceptCLIPForClassification)


def register_auto_classes() -> None:
    """Make AutoConfig / AutoModel / AutoModelForImageClassification / AutoImageProcessor resolve PerceptCLIP
    locally (idempotent). A tuple of classes is transformers' own way to let `architectures` choose."""
    AutoConfig.register(PerceptCLIPConfig.model_type, PerceptCLIPConfig, exist_ok=True)
    for auto_class in (AutoModel, AutoModelForImageClassification):
        auto_class._model_mapping.register(PerceptCLIPConfig, TASK_MODEL_CLASSES, exist_ok=True)
    AutoImageProcessor.register(
        PerceptCLIPConfig,
        image_processor_classes={"pil": CLIPImageProcessorPil},
        exist_ok=True,
    )
