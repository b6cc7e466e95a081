from clipbackdoor.models.factory import ModelBundle, add_model_config, create_model, list_models

__all__ = ["ModelBundle", "add_model_config", "create_model", "list_models"]
