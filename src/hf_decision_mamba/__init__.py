"""hf-decision-mamba: Decision Mamba offline-RL policies as Hugging Face `transformers` models.

Importing the package registers `DecisionMambaConfig` / `DecisionMambaModel` with `AutoConfig` / `AutoModel`.
"""

from transformers import AutoConfig, AutoModel

from .configuration_decision_mamba import DecisionMambaConfig
from .modeling_decision_mamba import DecisionMambaModel, DecisionMambaOutput, DecisionMambaPreTrainedModel
from .policy_decision_mamba import DecisionMambaPolicy
from .presets import PRESETS

__version__ = "0.1.0"

AutoConfig.register(DecisionMambaConfig.model_type, DecisionMambaConfig, exist_ok=True)
AutoModel.register(DecisionMambaConfig, DecisionMambaModel, exist_ok=True)
# `save_pretrained` then also writes the modeling files and an `auto_map`, so a saved folder loads with
# `trust_remote_code=True` where this package is not installed.
DecisionMambaConfig.register_for_auto_class()
DecisionMambaModel.register_for_auto_class("AutoModel")

__all__ = [
    "PRESETS",
    "DecisionMambaConfig",
    "DecisionMambaModel",
    "DecisionMambaOutput",
    "DecisionMambaPolicy",
    "DecisionMambaPreTrainedModel",
]
