"""The demo's tasks: data, model, one training step and the evaluation of each.

* ``digits``: scikit-learn's 8x8 handwritten digits (1797 images, 10 classes), an image
  classifier from :mod:`spikeops.models` (default Meta-SpikeFormer-tiny, T = 4).
* ``lm``: character-level language modelling on CPython's pydoc topics
  (``pydoc_data.topics``, ~465 k characters), SpikeGPT-style (or SpikingBrain-style).
* ``points``: procedurally generated point clouds of five shapes (sphere, cube, cylinder,
  torus, cone: surface samples, random scale, rotation and jitter), E-3DSNN.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F

from .. import models

TASKS = ("digits", "lm", "points")
TASK_MODELS = {
    "digits": ("meta_spikeformer", "spikformer", "spikeyolo"),
    "lm": ("spikegpt", "spikingbrain"),
    "points": ("e3dsnn",),
}
SHAPES = ("sphere", "cube", "cylinder", "torus", "cone")


@dataclass
class Task:
    """What the trainer needs: batches, a loss, an evaluation and an example input."""

    name: str
    model: torch.nn.Module
    train_batches: Callable[[torch.Generator], Any]   # an iterable of batches (one epoch)
    steps_per_epoch: int
    loss: Callable[[torch.nn.Module, Any], torch.Tensor]
    evaluate: Callable[[torch.nn.Module], dict]       # metric name -> value
    example: Any                                      # one batch's input for energy
    example_count: int                                # samples in ``example``
    tokens_per_batch: int = 0                         # lm: tokens per training step
    info: dict = field(default_factory=dict)          # data set facts for the report
    metric: str = "accuracy"                          # the headline metric


def _to(batch, device):
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to(b, device) for b in batch)
    return batch.to(device) if isinstance(batch, torch.Tensor) else batch


# ---- digits ------------------------------------------------------------------------------

def digits_task(model_name, size, T, nm, batch_size, seed, device, quick) -> Task:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    tr, te = train_test_split(list(range(len(y))), test_size=0.2, random_state=seed,
                              stratify=data.target)
    tr, te = torch.tensor(tr), torch.tensor(te)
    if quick:
        tr, te = tr[:4 * batch_size], te[:2 * batch_size]
    x_tr, y_tr, x_te, y_te = x[tr].to(device), y[tr].to(device), x[te].to(device), y[te].to(device)
    kw = dict(in_channels=1, num_classes=10, nm=nm, T=T)
    if quick:
        kw.update(_QUICK_IMAGE.get(model_name, {}))
    model = models.create(model_name, size, **kw).to(device)
    steps = math.ceil(len(tr) / batch_size)

    def batches(g):
        perm = torch.randperm(len(tr), generator=g).to(device)
        for i in range(steps):
            idx = perm[i * batch_size:(i + 1) * batch_size]
            yield x_tr[idx], y_tr[idx]

    def loss(m, batch):
        xb, yb = batch
        return F.cross_entropy(m(xb), yb)

    @torch.no_grad()
    def evaluate(m):
        m.eval()
        correct, total_loss = 0, 0.0
        for i in range(0, len(te), 256):
            logits = m(x_te[i:i + 256])
            total_loss += F.cross_entropy(logits, y_te[i:i + 256], reduction="sum").item()
            correct += (logits.argmax(1) == y_te[i:i + 256]).sum().item()
        m.train()
        return {"accuracy": correct / len(te), "test_loss": total_loss / len(te)}

    n_ex = min(64, len(te))
    return Task("digits", model, batches, steps, loss, evaluate, x_te[:n_ex], n_ex,
                info={"data": "scikit-learn load_digits (8x8, 10 classes)",
                      "train": len(tr), "test": len(te), "split": "stratified 80/20"})


# the --quick overrides: the smallest model that still has every layer kind
_QUICK_IMAGE = {
    "meta_spikeformer": dict(dims=(8, 16, 16), num_heads=2, mlp_ratio=1.0, T=2),
    "spikformer": dict(embed_dim=16, depth=1, num_heads=2, mlp_ratio=1.0, T=2),
    "spikeyolo": dict(widths=(4, 8, 8, 8)),
}


# ---- lm ------------------------------------------------------------------------------------

def load_corpus() -> str:
    """The pydoc topics shipped with CPython, in a fixed order."""
    from pydoc_data import topics

    return "\n\n".join(topics.topics[k] for k in sorted(topics.topics))


def lm_task(model_name, size, T, nm, batch_size, seed, device, quick, context=64,
            steps_per_epoch=150) -> Task:
    text = load_corpus()
    if quick:
        text = text[:20000]
        steps_per_epoch = 3
    vocab = sorted(set(text))
    lut = {c: i for i, c in enumerate(vocab)}
    ids = torch.tensor([lut[c] for c in text], dtype=torch.long)
    split = int(0.9 * len(ids))
    train_ids, val_ids = ids[:split], ids[split:]
    kw = dict(vocab_size=len(vocab), nm=nm)
    if quick:
        kw.update(d_model=16, n_layer=2, num_heads=2)
        if model_name == "spikingbrain":
            kw.update(window=8, mlp_ratio=1)
        else:
            kw.update(ffn_ratio=1)
    model = models.create(model_name, size, **kw).to(device)
    n_val = 8 if quick else 64
    # fixed validation windows, evenly spaced over the held-out tail
    starts = torch.linspace(0, len(val_ids) - context - 2, n_val).long()
    val_x = torch.stack([val_ids[s:s + context] for s in starts]).to(device)
    val_y = torch.stack([val_ids[s + 1:s + context + 1] for s in starts]).to(device)

    def batches(g):
        for _ in range(steps_per_epoch):
            s = torch.randint(0, len(train_ids) - context - 1, (batch_size,), generator=g)
            xb = torch.stack([train_ids[i:i + context] for i in s])
            yb = torch.stack([train_ids[i + 1:i + context + 1] for i in s])
            yield xb.to(device), yb.to(device)

    def loss(m, batch):
        xb, yb = batch
        return F.cross_entropy(m(xb).flatten(0, 1), yb.flatten())

    @torch.no_grad()
    def evaluate(m):
        m.eval()
        ce = F.cross_entropy(m(val_x).flatten(0, 1), val_y.flatten()).item()
        m.train()
        return {"bits_per_char": ce / math.log(2), "val_loss": ce}

    return Task("lm", model, batches, steps_per_epoch, loss, evaluate, val_x[:8], 8,
                tokens_per_batch=batch_size * context, metric="bits_per_char",
                info={"data": "pydoc_data.topics (CPython), character level",
                      "characters": len(text), "vocab": len(vocab), "context": context,
                      "train_chars": len(train_ids), "val_windows": n_val})


# ---- points --------------------------------------------------------------------------------

def _random_rotation(g):
    q = torch.randn(4, generator=g)
    q = q / q.norm()
    a, b, c, d = q.tolist()
    return torch.tensor([[a*a + b*b - c*c - d*d, 2*(b*c - a*d), 2*(b*d + a*c)],
                         [2*(b*c + a*d), a*a - b*b + c*c - d*d, 2*(c*d - a*b)],
                         [2*(b*d - a*c), 2*(c*d + a*b), a*a - b*b - c*c + d*d]])


def sample_shape(kind: str, n: int, g: torch.Generator) -> torch.Tensor:
    """``n`` points on the surface of a unit-sized ``kind`` (one of SHAPES), randomly
    scaled (0.6-0.95), rotated and jittered, inside ``[-1, 1]^3``."""
    u = torch.rand(n, generator=g)
    v = torch.rand(n, generator=g)
    if kind == "sphere":
        p = torch.randn(n, 3, generator=g)
        p = p / p.norm(dim=1, keepdim=True)
    elif kind == "cube":
        p = torch.rand(n, 3, generator=g) * 2 - 1
        face = torch.randint(0, 3, (n,), generator=g)
        sign = torch.randint(0, 2, (n,), generator=g).float() * 2 - 1
        p[torch.arange(n), face] = sign
    elif kind == "cylinder":
        th = 2 * math.pi * u
        p = torch.stack([th.cos(), th.sin(), v * 2 - 1], 1)
    elif kind == "torus":
        th, ph = 2 * math.pi * u, 2 * math.pi * v
        R, r = 0.7, 0.3
        p = torch.stack([(R + r * ph.cos()) * th.cos(), (R + r * ph.cos()) * th.sin(),
                         r * ph.sin()], 1)
    elif kind == "cone":
        th = 2 * math.pi * u
        h = v.sqrt()                                 # uniform over the lateral surface
        p = torch.stack([h * th.cos(), h * th.sin(), 1 - 2 * h], 1)
    else:
        raise ValueError(f"kind: expected one of {SHAPES}, got {kind!r}")
    p = p @ _random_rotation(g).T
    scale = 0.6 + 0.35 * torch.rand(1, generator=g)
    p = p * scale / p.abs().max().clamp(min=1e-6)
    p = p + 0.02 * torch.randn(n, 3, generator=g)
    return p.clamp(-0.999, 0.999)


def make_shapes(count: int, points: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % len(SHAPES)
    labels = labels[torch.randperm(count, generator=g)]
    clouds = [sample_shape(SHAPES[int(c)], points, g) for c in labels]
    return clouds, labels


def points_task(model_name, size, T, nm, batch_size, seed, device, quick, grid=16) -> Task:
    n_train, n_test, n_pts = (24, 10, 96) if quick else (600, 200, 256)
    tr_pts, tr_y = make_shapes(n_train, n_pts, seed)
    te_pts, te_y = make_shapes(n_test, n_pts, seed + 10_000)
    kw = dict(num_classes=len(SHAPES), nm=nm)
    if quick:
        kw.update(widths=(8, 8, 8), hidden=16)
    model = models.create(model_name, size, **kw).to(device)
    steps = math.ceil(n_train / batch_size)

    def batches(g):
        perm = torch.randperm(n_train, generator=g)
        for i in range(steps):
            idx = perm[i * batch_size:(i + 1) * batch_size].tolist()
            x = models.points_to_sparse([tr_pts[j] for j in idx], grid)
            yield x, tr_y[idx]

    def loss(m, batch):
        x, yb = batch
        return F.cross_entropy(m(x), yb)

    @torch.no_grad()
    def evaluate(m):
        m.eval()
        correct, total_loss = 0, 0.0
        for i in range(0, n_test, 32):
            x = models.points_to_sparse(te_pts[i:i + 32], grid)
            logits = m(x)
            total_loss += F.cross_entropy(logits, te_y[i:i + 32], reduction="sum").item()
            correct += (logits.argmax(1) == te_y[i:i + 32]).sum().item()
        m.train()
        return {"accuracy": correct / n_test, "test_loss": total_loss / n_test}

    n_ex = min(8, n_test)
    example = models.points_to_sparse(te_pts[:n_ex], grid)
    return Task("points", model, batches, steps, loss, evaluate, example, n_ex,
                info={"data": f"procedural point clouds: {', '.join(SHAPES)}",
                      "train": n_train, "test": n_test, "points_per_cloud": n_pts,
                      "grid": f"{grid}^3 voxels"})


BUILDERS = {"digits": digits_task, "lm": lm_task, "points": points_task}
