from clipbackdoor.models.configs import add_model_config, list_models
from clipbackdoor.models.factory import ModelBundle, create_model

__all__ = ["ModelBundle", "add_model_config", "create_model", "list_models"]
