"""perceptclip-hf: PerceptCLIP (arXiv 2503.13260) as a Hugging Face-native package.

`import perceptclip_hf` is light: torch and transformers load on the first use of a model-side name (PEP 562 lazy
attributes, as transformers' own `__init__` does), so `perceptclip --help` starts at once. The names are the model
code's (`perceptclip_hf.modeling.__all__`: `PerceptCLIPForRegression`, `PerceptCLIPConfig`, `create_model`, ...) and
scoring's `PerceptScorer`, `ScorerSet` and `score` (:mod:`perceptclip_hf.scoring`).

The PerceptCLIP classes are registered with the transformers Auto classes when the model code is first imported:
`from perceptclip_hf import PerceptCLIPForRegression` (any model class), `PerceptScorer`, or any command that loads a
model. From then on `AutoModel.from_pretrained(dir)` / `pipeline(...)` resolve our classes locally; call
:func:`register_auto_classes` to do it explicitly. Without the package, `trust_remote_code=True` loads the same
classes from the files shipped beside the weights.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Names defined outside the model code → their module; every other public name is the model code's.
_SCORING_NAMES = {"PerceptScorer": "scoring.scorer", "ScorerSet": "scoring.model_set", "score": "scoring.job"}


def _module(name: str):
    return importlib.import_module(f".{name}", __name__)


def __getattr__(name: str) -> Any:
    if name == "__all__":  # `from perceptclip_hf import *`
        value = [*_module("modeling").__all__, *_SCORING_NAMES, "__version__"]
    elif name in _SCORING_NAMES:
        value = getattr(_module(_SCORING_NAMES[name]), name)
    elif name.startswith("_") or importlib.util.find_spec(f"{__name__}.{name}"):  # a submodule: the import system's
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    elif name in _module("modeling").__all__:
        value = getattr(_module("modeling"), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__getattr__("__all__")})


if TYPE_CHECKING:  # static analysers and IDEs see the real names
    from .modeling import *  # noqa: F403
    from .scoring.job import score  # noqa: F401
    from .scoring.model_set import ScorerSet  # noqa: F401
    from .scoring.scorer import PerceptScorer  # noqa: F401
