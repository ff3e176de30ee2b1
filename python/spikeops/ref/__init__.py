"""Pure-PyTorch references of every op: the test oracle and the fallback."""
from . import attention, neurons, nm, sparse_conv, surrogate  # noqa: F401
