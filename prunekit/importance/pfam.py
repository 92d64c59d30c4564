"""PFAM (Zhang, Wu, Gu and Han 2020, "Pruning Convolutional Neural Networks with an Attention Mechanism for Remote
Sensing Image Classification"): correlation-attention filter criterion. Filters that are *least correlated* with
the rest of their layer score lowest and are pruned first.

For a group of n coupled channels:

1. Embed each channel i as e_i. ``embed="weights"`` (default): its filters from every coupled producing layer,
   each layer's part flattened and scaled to unit L2 norm, concatenated. ``embed="fmap"``: its feature maps as
   the next layer reads them on one calibration batch (at most ``fmap_images`` images, average-pooled to at most
   ``fmap_size`` x ``fmap_size``), flattened. ``center=True`` subtracts each embedding's mean (Pearson instead of
   cosine).
2. Correlation: C_ij = <e_i, e_j> / (|e_i| |e_j|)   (cosine similarity; 0 for an all-zero embedding).
   ``normalize=False`` keeps the filters' magnitudes instead (the dot-product "energy" of channel self-attention,
   as in non-local / DANet channel attention): C_ij = <e_i, e_j> / mean_k |e_k|^2, each layer's part of e_i
   scaled by that layer's RMS filter norm. A zero or regrowing (small) filter then correlates weakly with every
   other and stays selected, where the cosine judges it by its direction alone.
3. Self-attention over the filters of the layer (every filter attends to every other), a scaled softmax per row:
       A_ij = exp(C_ij / T) / sum_{k in K_i} exp(C_ik / T),   K_i = {k != i} (``include_self=False``, default)
                                                               or all k (``include_self=True``)
4. Score: s_i = sum_{j != i} A_ij * |C_ij|   (attention-weighted correlation with the rest of the layer).

T (``temperature``, default 0.1) sets how far the attention concentrates on a filter's strongest partners:
T -> infinity gives the mean |C_ij| over the layer, small T gives ~ |C| of the most positively correlated filter.
A filter duplicated elsewhere in its layer scores ~1 (kept); a filter orthogonal to all others scores 0.

Options come from ``ctx["pfam"]`` (a dict), the registered variants ``pfam`` (weights), ``pfam_energy``
(weights, ``normalize=False``) and ``pfam_fmap``, or a
named variant made with ``register_variant("pfam_t1", temperature=1.0)`` (usable as ``make_plan(criterion=...)``).
"""
from __future__ import annotations

from typing import Any, Dict

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..graph import Group
from .base import CRITERIA
from .observe import CONV, batches, cached, device_of, filter_rows, is_filter_slice, is_input_slice, position_index

DEFAULTS: Dict[str, Any] = {"embed": "weights", "temperature": 0.1, "include_self": False, "center": False,
                            "normalize": True,
                            "fmap_images": 16, "fmap_size": 8}


def pfam_scores(emb: torch.Tensor, temperature: float = 0.1, include_self: bool = False,
                center: bool = False, normalize: bool = True) -> torch.Tensor:
    """Scores for embeddings ``emb`` [n, D] (the formula of this module's docstring)."""
    if not temperature > 0:
        raise ConfigError(f"pfam temperature={temperature!r} must be > 0 (e.g. 0.1)")
    e = emb.double()
    if center:
        e = e - e.mean(1, keepdim=True)
    if normalize:
        e = e / e.norm(dim=1, keepdim=True).clamp(min=1e-12)
        corr = e @ e.t()
    else:
        corr = (e @ e.t()) / e.pow(2).sum(1).mean().clamp(min=1e-24)
    n = corr.shape[0]
    if n < 2:
        return torch.ones(n, dtype=torch.float64)
    eye = torch.eye(n, dtype=torch.bool)
    logits = corr / temperature
    if not include_self:
        logits = logits.masked_fill(eye, float("-inf"))
    attn = torch.softmax(logits, dim=1)
    return (attn * corr.abs()).masked_fill(eye, 0.0).sum(1)


def options(ctx: Dict[str, Any], **override: Any) -> Dict[str, Any]:
    """PFAM options: ``DEFAULTS`` updated by ``ctx["pfam"]`` then by ``override``.

    Raises ConfigError on an unknown option name or ``embed`` value.
    """
    opts = dict(DEFAULTS)
    opts.update(ctx.get("pfam") or {})
    opts.update(override)
    unknown = set(opts) - set(DEFAULTS)
    if unknown:
        raise ConfigError(f"unknown pfam option(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    if opts["embed"] not in ("weights", "fmap"):
        raise ConfigError(f"pfam embed={opts['embed']!r} is unknown; use 'weights' or 'fmap'")
    return opts


def _score(group: Group, model: nn.Module, ctx: Dict, opts: Dict[str, Any]) -> torch.Tensor:
    if opts["embed"] == "weights":
        emb = filter_rows(group, model, per_slice_unit=True, keep_magnitude=not opts["normalize"])
    else:
        emb = fmap_embedding(group, model, ctx, int(opts["fmap_images"]), int(opts["fmap_size"]))
    return pfam_scores(emb, float(opts["temperature"]), bool(opts["include_self"]), bool(opts["center"]),
                       bool(opts["normalize"])).float()


@CRITERIA.register("pfam")
def pfam(group: Group, model: nn.Module, ctx: Dict) -> torch.Tensor:
    """PFAM on filter weights: attention-weighted correlation of a filter with the rest of its layer
    (higher = kept; uncorrelated filters go first). Needs no data; options from ``ctx["pfam"]``.
    """
    return _score(group, model, ctx, options(ctx))


@CRITERIA.register("pfam_energy")
def pfam_energy(group: Group, model: nn.Module, ctx: Dict) -> torch.Tensor:
    """PFAM on dot-product energies (``normalize=False``): the variant chosen on the validation split for the soft
    schedule, where the cosine form swaps trained filters for regrowing ones at every stage (docs/pfam.md)."""
    return _score(group, model, ctx, options(ctx, normalize=False))


@CRITERIA.register("pfam_fmap")
def pfam_fmap(group: Group, model: nn.Module, ctx: Dict) -> torch.Tensor:
    """PFAM on feature maps (``embed="fmap"``): correlation of the channels' activations on one calibration
    batch (higher = kept). Needs ``data``.
    """
    return _score(group, model, ctx, options(ctx, embed="fmap"))


def register_variant(name: str, **opts: Any) -> str:
    """Register criterion ``name`` = PFAM with fixed options (idempotent for the same options); returns ``name``."""
    fixed = options({}, **opts)
    if name in CRITERIA:
        existing = getattr(CRITERIA.get(name), "pfam_options", None)
        if existing != fixed:
            raise ConfigError(f"criterion {name!r} already exists with other options; pick another name")
        return name

    def variant(group: Group, model: nn.Module, ctx: Dict) -> torch.Tensor:
        return _score(group, model, ctx, options(ctx, **opts))

    variant.pfam_options = fixed  # type: ignore[attr-defined]
    CRITERIA.register(name)(variant)
    return name


def variant_from_spec(name: str) -> str:
    """``pfam@normalize=false,temperature=1`` -> a registered PFAM variant of that name (for ablations); any name
    without ``@`` is returned as it is. Values are read by the option's type: true/false, text or a number."""
    if "@" not in name:
        return name
    base, _, spec = name.partition("@")
    if base != "pfam":
        raise ConfigError(f"option variants exist for pfam only, got {name!r}")
    opts: Dict[str, Any] = {}
    for item in spec.split(","):
        k, _, v = item.partition("=")
        kind = type(DEFAULTS.get(k, 0.0))
        opts[k] = v.lower() == "true" if kind is bool else (v if kind is str else float(v))
    return register_variant(name, **opts)


def _feature_maps(model: nn.Module, ctx: Dict, images: int, size: int) -> Dict[str, Dict[str, torch.Tensor]]:
    """Inputs of every conv/Linear (and outputs of every conv) on the first calibration batch, pooled small."""

    def pool(t: torch.Tensor, mod: nn.Module) -> torch.Tensor:
        t = t.detach().float()[:images]
        if t.dim() == 4 and not isinstance(mod, nn.Linear):
            t = F.adaptive_avg_pool2d(t, (min(size, t.shape[2]), min(size, t.shape[3])))
        if isinstance(mod, nn.Linear):  # [N, ..., F] -> [F, rest]
            return t.movedim(-1, 0).reshape(t.shape[-1], -1).cpu()
        return t.movedim(1, 0).reshape(t.shape[1], -1).cpu()

    def compute() -> Dict[str, Dict[str, torch.Tensor]]:
        maps: Dict[str, Dict[str, torch.Tensor]] = {}

        def hook(name: str):
            def fn(mod, inputs, out):
                if inputs and isinstance(inputs[0], torch.Tensor):
                    maps.setdefault(name, {})["in"] = pool(inputs[0], mod)
                if isinstance(out, torch.Tensor) and isinstance(mod, CONV):
                    maps.setdefault(name, {})["out"] = pool(out, mod)
            return fn

        handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
                   if isinstance(m, CONV + (nn.Linear,))]
        was = model.training
        model.eval()
        try:
            x, _ = next(batches(ctx, "pfam_fmap"), (None, None))
            if x is None:
                raise ConfigError("criterion 'pfam_fmap' got an empty data iterable; pass at least one batch")
            with torch.no_grad():
                model(x[:images].to(device_of(model)))
        finally:
            model.train(was)
            for h in handles:
                h.remove()
        return maps

    return cached(ctx, f"fmaps{images}x{size}", model, compute)


def fmap_embedding(group: Group, model: nn.Module, ctx: Dict, images: int = 16, size: int = 8) -> torch.Tensor:
    """[size, D]: each channel's feature maps as read by the consuming layers (producers' outputs if none)."""
    maps = _feature_maps(model, ctx, images, size)
    modules = dict(model.named_modules())
    parts = []
    for want, key in ((is_input_slice, "in"), (is_filter_slice, "out")):
        for m in group.members:
            mod = modules[m.module]
            t = maps.get(m.module, {}).get(key)
            if t is None or not want(m, mod):
                continue
            idx = position_index(m)
            if idx.numel() != t.shape[0]:
                continue
            ok = idx >= 0
            counts = torch.bincount(idx[ok], minlength=group.size)
            if int(counts.min()) != int(counts.max()) or int(counts.max()) == 0:
                continue
            rows = t[ok][torch.argsort(idx[ok], stable=True)].reshape(group.size, -1).double()
            parts.append(rows / rows.norm().clamp(min=1e-12))
        if parts:
            break
    if not parts:
        raise ConfigError(f"pfam embed='fmap' found no conv/Linear reading or producing group {group.key!r}; "
                          "use embed='weights'")
    return torch.cat(parts, 1)
