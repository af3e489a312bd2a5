"""Find, probe, load and cache Stable Diffusion models from the A1111 folder layout."""
from .manager import LoadedModel, ModelEntry, ModelManager, ModelNotFound, ModelPaths
from .tensor_files import ModelFileError

__all__ = ["LoadedModel", "ModelEntry", "ModelFileError", "ModelManager", "ModelNotFound", "ModelPaths"]
