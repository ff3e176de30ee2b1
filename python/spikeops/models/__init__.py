"""Model definitions built from ``spikeops.nn`` (tiny and small configurations).

    from spikeops import models
    net = models.create("meta_spikeformer", "tiny", in_channels=1, num_classes=10)
    models.names()                    # the registry
    with spikeops.use_reference():    # the same model on the pure-PyTorch references
        net(x)

Every model takes ``nm=`` (None, True for 2:4, ``(n, m)`` or ``"n:m"``): its Linear / Conv2d
layers whose input dimension is a multiple of m become ``NMLinear`` / ``NMConv2d``
(SR-STE trained); ``model.nm_layers`` lists them.

===================  ==========================================================  ==========
name                 model                                                       input
===================  ==========================================================  ==========
spikformer           Spikformer: SPS stem + SSA blocks                            [B,C,H,W]
meta_spikeformer     Meta-SpikeFormer (SDT V2): conv stages + SDSA blocks         [B,C,H,W]
spikeyolo            SpikeYOLO-style backbone: I-LIF MS-Blocks + SpikeSPPF        [B,C,H,W]
spikegpt             SpikeGPT-style LM: RWKV-4 (or linear attention) + LIF        [B,L] ids
spikingbrain         SpikingBrain-style hybrid LM: GLA / SWA alternating, I-LIF   [B,L] ids
e3dsnn               E-3DSNN: spike sparse conv stages with I-LIF                 SparseTensor
===================  ==========================================================  ==========
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from . import e3dsnn as _e3dsnn
from . import meta_spikeformer as _meta
from . import spikegpt as _spikegpt
from . import spikeyolo as _spikeyolo
from . import spikformer as _spikformer
from . import spikingbrain as _spikingbrain
from ._common import apply_nm, parse_nm
from .e3dsnn import E3DSNN, points_to_sparse
from .meta_spikeformer import MetaSpikeFormer
from .spikegpt import SpikeGPT
from .spikeyolo import SpikeYOLOBackbone
from .spikformer import Spikformer
from .spikingbrain import SpikingBrain

__all__ = ["create", "names", "sizes", "apply_nm", "parse_nm", "Spikformer",
           "MetaSpikeFormer", "SpikeYOLOBackbone", "SpikeGPT", "SpikingBrain", "E3DSNN",
           "points_to_sparse"]

_REGISTRY: dict[str, tuple[Callable[..., nn.Module], dict]] = {
    "spikformer": (Spikformer, _spikformer.CONFIGS),
    "meta_spikeformer": (MetaSpikeFormer, _meta.CONFIGS),
    "spikeyolo": (SpikeYOLOBackbone, _spikeyolo.CONFIGS),
    "spikegpt": (SpikeGPT, _spikegpt.CONFIGS),
    "spikingbrain": (SpikingBrain, _spikingbrain.CONFIGS),
    "e3dsnn": (E3DSNN, _e3dsnn.CONFIGS),
}


def names() -> list[str]:
    """The registered model names."""
    return sorted(_REGISTRY)


def sizes(name: str) -> list[str]:
    """The configurations of model ``name`` ("tiny", "small")."""
    return sorted(_lookup(name)[1])


def _lookup(name):
    if not isinstance(name, str) or name.lower().replace("-", "_") not in _REGISTRY:
        raise ValueError(f"name: unknown model {name!r}; expected one of {names()}")
    return _REGISTRY[name.lower().replace("-", "_")]


def create(name: str, size: str = "tiny", **kw) -> nn.Module:
    """Build model ``name`` in configuration ``size``; keyword arguments override the
    configuration's (``in_channels``, ``num_classes``, ``T``, ``vocab_size``, ``nm``, ...)."""
    cls, configs = _lookup(name)
    if size not in configs:
        raise ValueError(f"size: unknown configuration {size!r} of {name!r}; expected one of "
                         f"{sorted(configs)}")
    return cls(**{**configs[size], **kw})
