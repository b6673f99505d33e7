"""tadm: the TADM model (Timestep-Aware Diffusion Model for extreme image rescaling).

`TADM` and `TADMOutput` load torch and diffusers on first use, so that importing a light part
(`tadm.config`, `tadm.png`, `tadm.__version__`) does not: the `tadm` command answers --help
without them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tadm.config import TADMConfig
from tadm.presets import PRESETS, build_config

if TYPE_CHECKING:
    from tadm.model import TADM, TADMOutput

__version__ = "0.1.0"  # the package's version (pyproject.toml reads it from here)

__all__ = ["PRESETS", "TADM", "TADMConfig", "TADMOutput", "__version__", "build_config"]


def __getattr__(name: str) -> Any:
    if name in ("TADM", "TADMOutput"):
        from tadm import model

        return getattr(model, name)
    raise AttributeError(f"module 'tadm' has no attribute {name!r}")
