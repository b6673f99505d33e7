"""tadm: the TADM model (Timestep-Aware Diffusion Model for extreme image rescaling)."""

from tadm.config import TADMConfig
from tadm.model import TADM, TADMOutput
from tadm.presets import PRESETS, build_config

__all__ = ["PRESETS", "TADM", "TADMConfig", "TADMOutput", "build_config"]
