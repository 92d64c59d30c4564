"""Target curves: how far along the way to the final ratio a schedule is after a fraction ``progress`` of it.

Iterative rounds and the soft schedule's ramp pick one by name; gradual pruning is the ``cubic`` curve
(Zhu & Gupta 2017: s_t = s_f + (s_i - s_f)(1 - progress)^3, fast early cuts while the network is redundant,
slow late ones while it adapts).

    ratio_at("linear", 0.5, final=0.9)        # 0.45
    ratio_at("exponential", 0.5, final=0.99)  # 0.9: the same fraction of the survivors goes each round (Han et al.)
"""
from __future__ import annotations

from typing import Callable, Dict

from ..errors import ConfigError


def _linear(p: float, initial: float, final: float) -> float:
    return initial + (final - initial) * p


def _cubic(p: float, initial: float, final: float) -> float:
    return final + (initial - final) * (1.0 - p) ** 3


def _exponential(p: float, initial: float, final: float) -> float:
    """Kept fraction shrinks geometrically: each equal step of ``p`` removes the same share of what is left."""
    keep_start, keep_end = 1.0 - initial, 1.0 - final
    return 1.0 - keep_start * (keep_end / keep_start) ** p


CURVES: Dict[str, Callable[[float, float, float], float]] = {
    "linear": _linear, "cubic": _cubic, "exponential": _exponential}


def check_curve(name: str) -> str:
    """Return ``name`` if it is a known ramp curve (``CURVES``); raise ConfigError listing them otherwise."""
    if name not in CURVES:
        raise ConfigError(f"curve={name!r} is unknown; use one of {', '.join(CURVES)}")
    return name


def ratio_at(curve: str, progress: float, final: float, initial: float = 0.0) -> float:
    """The ratio after ``progress`` (clamped to [0, 1]) of the way from ``initial`` to ``final``."""
    p = min(1.0, max(0.0, float(progress)))
    if p >= 1.0:
        return float(final)  # exactly the target at the end, whatever the float path
    return float(CURVES[check_curve(curve)](p, float(initial), float(final)))
