"""Public op functions: thin wrappers over torch.ops.spikeops.* (see each module)."""
from .neurons import alif, if_, ilif, lif, plif  # noqa: F401

__all__ = ["lif", "if_", "plif", "ilif", "alif"]
