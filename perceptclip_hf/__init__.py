"""perceptclip-hf: PerceptCLIP (arXiv 2503.13260) as a Hugging Face-native package.

Importing the package registers the PerceptCLIP classes with the transformers Auto classes, so
`AutoModel.from_pretrained(dir)` works without `trust_remote_code` when the package is installed.
"""

from .auto import register_auto_classes
from .modeling import *  # noqa: F403 - the model classes, re-exported (`modeling.__all__`)
from .modeling import __all__ as _model_names

__version__ = "0.1.0"
__all__ = [*_model_names, "register_auto_classes"]

register_auto_classes()
