"""Squeeze-and-excitation channel attention, attached after prunable convolutions without changing the function.

    hosts = insert_attention(model, torch.randn(1, 3, 64, 64))   # one SE module after each prunable conv's BN
    ...train, score...
    report = remove_attention(model, "fold")                     # plain model again, same state_dict keys

The module is attached to its *host* (the BatchNorm that normalises the conv's output, else the conv itself) as
a child named ``prunekit_attention`` plus a forward hook, so the host's own parameter names do not change and
removal is exact bookkeeping. The gate is ``2 * sigmoid(z)`` with the last layer initialised to zero: z = 0 gives
a gate of exactly 1, so inserting attention leaves the outputs unchanged, and the gate can both damp (-> 0) and
boost (-> 2) a channel. A positive per-channel scale after BN commutes with ReLU and max-pooling, so attaching
to the BN is the same as attaching after the activation.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

import torch
from torch import nn

from ..errors import ConfigError, ModelError
from ..graph import build_graph

CHILD = "prunekit_attention"
CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
PRODUCERS = CONV + (nn.Linear,)  # layers whose output channels attention can weigh
BN = nn.modules.batchnorm._BatchNorm


class _L1OnGate(torch.autograd.Function):
    """Identity forward; backward adds d(lam * mean_n sum_c m_c g_nc)/dg = lam m_c / N: the per-image L1 norm of
    the (positive) gate vector over the channels the mask ``m`` selects (all when None), averaged over the batch,
    as if added to the loss."""

    @staticmethod
    def forward(ctx: Any, gate: torch.Tensor, lam: float, mask: Optional[torch.Tensor]) -> torch.Tensor:
        ctx.lam, ctx.mask = lam, mask
        return gate.view_as(gate)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        push = ctx.lam / grad.shape[0]
        return grad + (push if ctx.mask is None else push * ctx.mask), None, None


class ChannelAttention(nn.Module):
    """Global average pool -> Linear(C, C/r) -> ReLU -> Linear(C/r, C) -> 2*sigmoid; scales each channel."""

    def __init__(self, channels: int, reduction: int = 8, min_hidden: int = 4) -> None:
        super().__init__()
        if reduction < 1:
            raise ConfigError(f"attention reduction={reduction} must be >= 1 (e.g. 8)")
        hidden = max(min_hidden, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)
        self.sparsity = 0.0  # L1 penalty weight on the gates while training
        # set: batch-mean gate [C] -> 0/1 mask of the channels the penalty falls on (prunekit.attention.budget)
        self.budget: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
        self.observer: Optional[Callable[[torch.Tensor], None]] = None  # sees every gate batch (scoring)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C] gates in (0, 2) for input x [N, C, ...]."""
        squeezed = x.mean(dim=tuple(range(2, x.dim()))) if x.dim() > 2 else x
        return 2.0 * torch.sigmoid(self.fc2(torch.relu(self.fc1(squeezed))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scale each channel of ``x`` by its gate. While training with ``sparsity`` > 0, the gates also get an
        L1 push in backward (on the channels ``budget`` selects, or all).
        """
        g = self.gate(x)
        if self.observer is not None:
            self.observer(g.detach())
        if self.training and self.sparsity > 0:
            mask = None if self.budget is None else self.budget(g.detach().mean(0))
            g = _L1OnGate.apply(g, self.sparsity, mask)
        return x * g.reshape(*g.shape, *([1] * (x.dim() - 2)))


def _attend(host: nn.Module, inputs: Any, out: torch.Tensor) -> torch.Tensor:
    return getattr(host, CHILD)(out)


def attention_modules(model: nn.Module) -> Dict[str, ChannelAttention]:
    """Host module name -> its attention module."""
    return {name: getattr(m, CHILD) for name, m in model.named_modules()
            if isinstance(getattr(m, CHILD, None), ChannelAttention)}


def _hosts(model: nn.Module, example_inputs: Any) -> Dict[str, str]:
    """Conv/Linear name -> the BN that reads its output directly (found by one forward pass)."""
    conv_out: Dict[int, str] = {}
    keep: List[torch.Tensor] = []
    follow: Dict[str, str] = {}
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, PRODUCERS):
            def out_hook(mod, inp, out, name=name):
                conv_out[id(out)] = name
                keep.append(out)
            handles.append(m.register_forward_hook(out_hook))
        elif isinstance(m, BN):
            def pre_hook(mod, inp, name=name):
                src = conv_out.get(id(inp[0])) if inp else None
                if src is not None:
                    follow.setdefault(src, name)
            handles.append(m.register_forward_pre_hook(pre_hook))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(*example_inputs)
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    return follow


def insert_attention(model: nn.Module, example_inputs: Any, reduction: int = 8, min_hidden: int = 4) -> List[str]:
    """Attach a ChannelAttention after every conv (or hidden Linear) that produces a prunable channel group;
    returns the host names."""
    if attention_modules(model):
        raise ModelError("this model already has attention modules; call remove_attention(model) first")
    inputs = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    graph = build_graph(model, inputs)
    modules = dict(model.named_modules())
    producers: List[str] = []
    for g in graph.groups:
        if not g.prunable:
            continue
        for m in g.members:
            if (m.kind == "param" and m.attr == "weight" and m.dim == 0 and isinstance(modules[m.module], PRODUCERS)
                    and m.module not in producers):
                producers.append(m.module)
    follow = _hosts(model, inputs)
    hosts: List[str] = []
    for conv_name in producers:
        host_name = follow.get(conv_name, conv_name)
        host = modules[host_name]
        if hasattr(host, CHILD):
            continue
        layer = modules[conv_name]
        channels = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
        ref = next(host.parameters(), None)
        se = ChannelAttention(channels, reduction, min_hidden)
        if ref is not None:
            se = se.to(device=ref.device, dtype=ref.dtype)
        host.add_module(CHILD, se)
        host.register_forward_hook(_attend)
        hosts.append(host_name)
    if not hosts:
        raise ModelError("found no prunable convolution to attach channel attention to; the attention criterion "
                         "works on CNNs (VGG-, ResNet-, MobileNet-style)")
    return hosts


def remove_attention(model: nn.Module, mode: str = "fold",
                     gate_means: Optional[Dict[str, torch.Tensor]] = None) -> Dict[str, str]:
    """Detach every attention module; returns {host: "fold" | "drop" (+ why)} for the report.

    ``fold`` multiplies the host's per-channel affine (BN gamma and beta, or conv filter and bias) by the gate's
    average over the scoring data (``gate_means``, from :func:`prunekit.attention.attention_scores`): exact for
    the averaged gate whatever follows, approximate only by how much the gate varied between images.
    (Conv/Linear hosts: the gate scales output channels, so weight rows and bias are multiplied.)
    ``drop`` removes the modules and keeps the weights as they are (gate taken as 1).
    """
    if mode not in ("fold", "drop"):
        raise ConfigError(f"attention removal mode={mode!r} is unknown; use 'fold' or 'drop'")
    done: Dict[str, str] = {}
    modules = dict(model.named_modules())
    for name, se in attention_modules(model).items():
        host = modules[name]
        how = "drop"
        if mode == "fold":
            mean = (gate_means or {}).get(name)
            if mean is None:
                raise ConfigError(f"cannot fold attention of {name!r}: no averaged gate; run attention_scores first "
                                  "or use mode='drop'")
            how = _fold(host, mean)
        for key, fn in list(host._forward_hooks.items()):
            if fn is _attend:
                del host._forward_hooks[key]
        delattr(host, CHILD)
        done[name] = how
    return done


def _fold(host: nn.Module, mean: torch.Tensor) -> str:
    with torch.no_grad():
        if isinstance(host, BN):
            if not host.affine:
                return "drop (BN without affine parameters: nothing to fold into)"
            s = mean.to(host.weight)
            host.weight.mul_(s)
            host.bias.mul_(s)
            return "fold"
        if isinstance(host, PRODUCERS):
            s = mean.to(host.weight)
            host.weight.mul_(s.reshape(-1, *([1] * (host.weight.dim() - 1))))
            if host.bias is not None:
                host.bias.mul_(s)
            return "fold"
    return f"drop ({type(host).__name__} has no per-channel affine to fold into)"
