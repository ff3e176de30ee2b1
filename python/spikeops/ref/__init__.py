"""Pure-PyTorch references of every op: the test oracle and the fallback."""
from . import neurons, surrogate  # noqa: F401
