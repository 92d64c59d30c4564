"""Train the inserted attention modules on the training split, with the backbone frozen or jointly.

    train_attention(model, dataset, epochs=3, mode="frozen", sparsity=1e-3)

Frozen: only the attention parameters get gradients, and BatchNorm running statistics are held (momentum 0), so
the backbone comes out unchanged (BN's ``num_batches_tracked`` counter aside). ``sparsity`` adds, per attention
module, ``sparsity * mean over images of sum over channels of gate`` to the loss (an L1 penalty: gates are
positive), pushing unimportant channels' gates toward zero; with a ``budget`` only as many channels per layer as
the plan will remove are pushed (:mod:`prunekit.attention.budget`).
"""
from __future__ import annotations

from functools import partial
from typing import Any, Dict, Optional, Sequence

from torch import nn

from ..errors import ConfigError
from ..train import RunLogger, TrainConfig, TrainResult, fit
from .budget import GroupBudget, restrict
from .se import BN, attention_modules


def train_attention(model: nn.Module, data: Any, epochs: int = 3, mode: str = "frozen", sparsity: float = 0.0,
                    cfg: Optional[TrainConfig] = None, device: Any = "auto", progress: bool = False,
                    budget: Optional[Dict[str, GroupBudget]] = None, loggers: Sequence[RunLogger] = ()
                    ) -> TrainResult:
    """Train with :func:`prunekit.train.fit` (``cfg`` gives lr, batch size, seed; its ``epochs`` is replaced); its
    epochs reach ``loggers`` as phase ``"attention"``.

    ``budget`` (host -> its group's budget, :func:`prunekit.attention.budget.budget_groups`) puts the penalty on only
    as many channels of each group as the plan removes, the lowest-gated of each batch; hosts it does not name are
    penalized whole."""
    if mode not in ("frozen", "joint"):
        raise ConfigError(f"attention training mode={mode!r} is unknown; use 'frozen' or 'joint'")
    if sparsity < 0:
        raise ConfigError(f"attention sparsity={sparsity} must be >= 0 (e.g. 1e-3)")
    if epochs < 0:
        raise ConfigError(f"attention epochs={epochs} must be >= 0")
    found = attention_modules(model)
    if not found:
        raise ConfigError("the model has no attention modules; call prunekit.attention.insert_attention first")
    cfg = (cfg or TrainConfig()).model_copy(update={"epochs": epochs, "patience": None})
    own = {id(p) for se in found.values() for p in se.parameters()}
    flags = {id(p): p.requires_grad for p in model.parameters()}
    momenta = {}
    try:
        shared = restrict(budget or {}, found)
        for name, se in found.items():
            se.sparsity = float(sparsity)
            se.budget = partial(shared[name].mask, name) if name in shared else None
        if mode == "frozen":
            for p in model.parameters():
                p.requires_grad_(id(p) in own)
            for m in model.modules():
                if isinstance(m, BN):
                    momenta[m] = m.momentum
                    m.momentum = 0.0
        return fit(model, data, cfg, device=device, out_dir=None, resume=False, progress=progress,
                   phase="attention", loggers=loggers)
    finally:
        for se in found.values():
            se.sparsity, se.budget = 0.0, None
        for p in model.parameters():
            p.requires_grad_(flags.get(id(p), True))
        for m, mom in momenta.items():
            m.momentum = mom
