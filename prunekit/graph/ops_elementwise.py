"""Element-wise ops: channels at equal positions are joined; unary ops pass ids through; reductions reduce them."""
from __future__ import annotations

from typing import Any, List

import torch

from .idops import compress_pair, reduce_ids, varies
from .trace import Recorder, register

_BINARY = [
    "add", "sub", "mul", "div", "true_divide", "floor_divide", "remainder", "fmod", "pow", "maximum", "minimum",
    "atan2", "hypot", "lerp", "addcmul", "addcdiv", "eq", "ne", "lt", "le", "gt", "ge", "logical_and",
    "logical_or", "logical_xor", "bitwise_and", "bitwise_or", "bitwise_xor", "copysign", "xlogy", "where",
    "masked_fill", "subtract", "multiply", "divide", "fmax", "fmin", "rsub", "greater", "less", "clamp", "clip",
    "clamp_min", "clamp_max", "heaviside",
]
_DUNDER = ["add", "radd", "iadd", "sub", "rsub", "isub", "mul", "rmul", "imul", "truediv", "rtruediv", "itruediv",
           "floordiv", "rfloordiv", "ifloordiv", "pow", "rpow", "ipow", "mod", "rmod", "and", "rand", "iand", "or",
           "ror", "ior", "xor", "rxor", "eq", "ne", "lt", "le", "gt", "ge", "div", "rdiv", "idiv"]
_UNARY = [
    "relu", "relu6", "gelu", "silu", "sigmoid", "tanh", "hardswish", "hardsigmoid", "leaky_relu", "elu", "selu",
    "celu", "softplus", "mish", "hardtanh", "exp", "log", "sqrt", "rsqrt", "neg", "__neg__", "abs", "__abs__", "sin",
    "cos", "erf", "sign", "reciprocal", "square", "logsigmoid", "softsign", "threshold", "dropout", "dropout1d",
    "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout", "contiguous", "clone", "detach", "to", "float",
    "half", "double", "bfloat16", "type_as", "type", "softmax", "log_softmax", "normalize", "cumsum", "cumprod",
    "requires_grad_", "cpu", "cuda", "tril", "triu", "nan_to_num", "floor", "ceil", "round", "trunc", "log1p", "expm1",
    "sigmoid_", "hardshrink", "softshrink", "tanhshrink", "silu_", "log2", "exp2", "frac", "logit", "local_response_norm",
    "__invert__", "logical_not", "bitwise_not", "isinf", "positive", "__pos__", "gelu_", "relu_", "rrelu",
    "erfinv", "sinh", "cosh", "atan", "asin", "acos", "deg2rad", "rad2deg", "sgn", "fill_", "zero_", "normal_",
    "uniform_", "bernoulli", "bernoulli_", "stochastic_depth", "pin_memory", "share_memory_", "as_subclass",
    "softmin", "relu6_", "hardswish_", "elu_", "leaky_relu_", "int", "long", "bool", "short", "byte", "char",
]


def _names(base: List[str]) -> List[str]:
    out = []
    for n in base:
        out += [n, n + "_"]
    return out


def _roots(t: Any) -> set:
    if not isinstance(t, torch.Tensor):
        return set()
    return set(t.__dict__.get("_pk_roots", ())) | {id(t)}


@register(*_names(_BINARY), *[f"__{n}__" for n in _DUNDER])
def elementwise(rec: Recorder, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    """Join atoms that meet at the same output position; untracked tensors pin the dims they span."""
    if not isinstance(out, torch.Tensor):
        return
    operands = [a for a in list(args) + list(kwargs.values()) if isinstance(a, torch.Tensor)]
    if name in ("masked_fill", "masked_fill_"):
        operands = operands[:1]
    tracked = [(t, rec.ids(t)) for t in operands]
    # the operand that spans the whole output goes first; a smaller one is broadcast onto it
    tracked.sort(key=lambda p: (p[1] is None, tuple(p[0].shape) != tuple(out.shape)))
    result = None
    for t, ids in tracked:
        if ids is None:
            continue
        ids = ids.expand(out.shape) if ids.dim() <= out.dim() else ids
        if result is None:
            result = ids
            continue
        if _broadcast_over_varying(t, result):
            if _spans_last(t, result):
                rec.atoms.pin(result)  # RoPE's cos/sin: one value per head dim, shared by all heads
            continue  # one value shared by many channels (a scalar scale): no coupling
        a, b = compress_pair(result, ids)
        rec.atoms.join(a, b)
        if (result < 0).any():
            result = torch.where(result >= 0, result, ids)
    if result is None:
        return
    for t, ids in tracked:  # an untracked tensor that spans a channel dim can never shrink: pin those channels
        if ids is None and t.numel() > 1 and _broadcast_over_varying(t, result) and _spans_last(t, result):
            rec.atoms.pin(result)  # shared by every head: whole heads may still go
        elif ids is None and t.numel() > 1:
            off = out.dim() - t.dim()
            for d in range(t.dim()):
                if t.shape[d] > 1 and varies(result, d + off):
                    rec.atoms.freeze(result.narrow(d + off, 0, result.shape[d + off]))
    rec.set_ids(out, result)
    if name.lstrip("_").startswith(("add", "iadd", "radd")):
        roots = set()
        for t in operands:
            roots |= _roots(t)
        roots.discard(id(out))  # an in-place add (out += x) is not a residual over its own result
        out.__dict__["_pk_roots"] = roots


def _spans_last(t: torch.Tensor, result: torch.Tensor) -> bool:
    """True when ``t`` has one value per index of ``result``'s last dim and the ids vary along it (a per-dim table)."""
    return t.dim() >= 1 and t.shape[-1] > 1 and varies(result, -1)


def _broadcast_over_varying(t: torch.Tensor, result: torch.Tensor) -> bool:
    off = result.dim() - t.dim()
    for d in range(result.dim()):
        size = t.shape[d - off] if d >= off else 1
        if size == 1 and result.shape[d] > 1 and varies(result, d):
            return True
    return False


@register(*_names(_UNARY))
def unary(rec: Recorder, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    """Value-changing, shape-keeping ops: ids (and residual roots) pass through."""
    x = args[0] if args else next(iter(kwargs.values()))
    if not isinstance(out, torch.Tensor) or not isinstance(x, torch.Tensor):
        return
    ids = rec.ids(x)
    if ids is None:
        return
    if ids.shape != out.shape:
        ids = ids.expand(out.shape)
    dim = kwargs.get("dim", args[1] if len(args) > 1 and isinstance(args[1], int) else None)
    if name.rstrip("_") in _ACROSS and isinstance(dim, int) and varies(ids, dim):
        rec.atoms.mark_normalized(ids)  # a softmax across channels: every channel changes the others
    rec.set_ids(out, ids)
    if out is not x and "_pk_roots" in x.__dict__:  # act(x + f(x)) is still a residual over x, not over x + f(x)
        out.__dict__["_pk_roots"] = set(x.__dict__["_pk_roots"])


_REDUCE = ["mean", "sum", "amax", "amin", "std", "var", "norm", "logsumexp", "prod", "all", "any", "max", "min",
           "median", "nanmean", "nansum", "var_mean", "std_mean", "count_nonzero"]


_STATISTICS = {"mean", "var", "std", "var_mean", "std_mean", "logsumexp", "median", "nanmean"}
_ACROSS = {"softmax", "log_softmax", "softmin"}


@register(*_REDUCE)
def reduction(rec: Recorder, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    """Reduced dims keep ids only where they were constant (a mean over tokens keeps channel ids)."""
    x = args[0]
    if name in ("max", "min") and len(args) > 1 and isinstance(args[1], torch.Tensor):
        return elementwise(rec, name, args, kwargs, out)
    ids = rec.ids(x)
    if ids is None:
        return
    dim = kwargs.get("dim", args[1] if len(args) > 1 and not isinstance(args[1], torch.Tensor) else None)
    if name == "norm":
        dim = kwargs.get("dim", args[2] if len(args) > 2 else None)
    keepdim = bool(kwargs.get("keepdim", args[2] if name not in ("norm",) and len(args) > 2
                               and isinstance(args[2], bool) else False))
    if dim is None:
        return
    dims = [dim] if isinstance(dim, int) else list(dim)
    if name in _STATISTICS and any(varies(ids, d) for d in dims):
        rec.atoms.mark_normalized(ids)  # a mean/variance over channels (RMSNorm written out): removal is not exact
    red = reduce_ids(ids, dims, keepdim)
    target = out[0] if isinstance(out, tuple) else out
    if isinstance(target, torch.Tensor) and tuple(red.shape) == tuple(target.shape):
        rec.set_ids(target, red)
