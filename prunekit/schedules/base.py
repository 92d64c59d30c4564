"""What every schedule shares: the pruning window, the epoch boundaries where pruning happens, unstructured masks
kept through training, and a state that round-trips through the checkpoint.

A schedule is a :class:`~prunekit.train.Callback`: ``fit(model, data, cfg, callbacks=[schedule])`` drives it.
Epoch-level schedules act at *boundaries*: boundary ``b`` is "``b`` epochs done", reached in ``on_train_start``
for ``b = 0`` and in ``on_epoch_end`` of epoch ``b - 1`` otherwise (after validation, before the checkpoint, so
the checkpoint holds the pruned state). Step-level schedules act in ``on_step_end`` at global step ``t``.

State is tensors and JSON-able values only, and nothing here draws from a global random generator, so a run
killed mid-epoch resumes from the last checkpoint and ends bit-identical to an uninterrupted one.
"""
from __future__ import annotations

from typing import Any, ClassVar, Dict, Iterable, List, Optional, Tuple, Union

import torch
from torch import nn

from ..allocate.reduce import parse_reduce, reach, search_ratio
from ..allocate.round_to import resolve_round_to
from ..apply.oneshot import checked_plan
from ..errors import CheckpointError, ConfigError
from ..graph import DependencyGraph
from ..importance import CRITERIA
from ..plan import Plan, check_round_to
from ..registry import Registry
from ..sparse import Masks, magnitude_prune
from ..train.callbacks import Callback, TrainState
from ..train.masks import MaskCallback
from .channels import calibration
from .curves import ratio_at

SCHEDULES: Registry = Registry("schedule")  # name -> schedule class; each schedule's file registers itself

METHODS = ("unstructured", "structured")
SCOPES = ("global", "layer")
PLAN_SCOPES = {"layer": "uniform", "global": "global"}  # a schedule's scope -> make_plan's
CALIB_BATCHES = 4  # training batches data-driven structured criteria score on, unless calib_batches says
# unstructured criterion name -> prunekit.sparse allocation (how the budget is shared between layers)
UNSTRUCTURED_CRITERIA = {"l1": None, "magnitude": None, "lamp": "lamp", "erk": "erk"}


def check_criterion(method: str, criterion: str) -> None:
    """Refuse, in one line listing the known ones, a criterion ``method`` has not: before any training is spent."""
    if method == "unstructured" and criterion not in UNSTRUCTURED_CRITERIA:
        raise ConfigError(f"criterion {criterion!r} is not an unstructured criterion; use one of "
                          f"{', '.join(UNSTRUCTURED_CRITERIA)} (channel criteria need structured pruning)")
    if method == "structured":
        CRITERIA.get(criterion)
        if criterion == "attention_gm":  # reads scores that only the attention flow (criterion 'attention') makes
            raise ConfigError("criterion 'attention_gm' is a score form of the attention flow; use --criterion "
                              "attention --attention-score gate_gm (or gate_x_scale_gm)")


class Schedule(Callback):
    """Base of all schedules; see the module docstring. Subclasses set ``methods`` and override hooks.

    Args:
        method: ``"unstructured"`` (weight masks) or ``"structured"`` (whole channels).
        target: final fraction removed: of the targeted weights (unstructured) or of each group's channels
            (structured, relative to the original width), in [0, 1).
        criterion: unstructured: ``l1``/``magnitude``, ``lamp`` or ``erk``; structured: any name registered in
            ``prunekit.importance.CRITERIA`` (l1, l2, fpgm, pfam, random, ...).
        start_epoch, end_epoch: the pruning window in epochs; ``end_epoch=None`` means a schedule-specific
            fraction of the run (``default_end``), clamped to the run length.
        every: epochs between pruning stages (iterative, soft); schedule-specific default when None.
        scope: ``"global"`` (one threshold across layers) or ``"layer"`` (every layer/group loses ``target``);
            default: global for unstructured, layer for structured.
        seed: seeds criteria that draw randomness (e.g. ``random``), combined with the epoch/step.
        input_size: square input side for tracing structured models; default: taken from the training data.
        skip: layer names or patterns left whole (unstructured: see ``prunekit.sparse.select_targets``;
            structured: module names passed as ``ignore`` to the dependency graph).
        overrides: structured: module-name prefix -> final ratio for the groups produced there.
        reduce: structured: a target users think in, ``"params=0.4"`` / ``{"macs": 0.5}``; at the first stage the
            original model is measured and ``target`` (+ ``overrides``) chosen to remove that share
            (``prunekit.allocate.reduce.search_ratio``); ``target`` is then ignored.
        round_to: structured: keep channel counts multiples of this int (or ``"auto"``, measured), as one-shot does.
        calib_batches: structured: training batches data-driven criteria score on (default 4).
    """

    methods: ClassVar[Tuple[str, ...]] = ("unstructured",)
    default_end: ClassVar[float] = 0.75
    default_every: ClassVar[Optional[int]] = 1

    def __init__(self, method: str = "unstructured", target: float = 0.9, criterion: str = "l1",
                 start_epoch: int = 0, end_epoch: Optional[int] = None, every: Optional[int] = None,
                 scope: Optional[str] = None, seed: int = 0, input_size: Optional[int] = None,
                 skip: Optional[Iterable[str]] = None, overrides: Optional[Dict[str, float]] = None,
                 reduce: Union[None, str, Dict[str, float]] = None, round_to: Union[None, int, str] = None,
                 calib_batches: Optional[int] = None) -> None:
        name = type(self).__name__
        if method not in METHODS:
            raise ConfigError(f"method={method!r} is unknown; use 'unstructured' or 'structured'")
        if method not in self.methods:
            others = "oneshot, iterative or soft" if method == "structured" else "oneshot, iterative, gradual, dns or rigl"
            raise ConfigError(f"{name} supports {' and '.join(self.methods)} pruning only, not method={method!r}; "
                              f"use the {others} schedule for {method} pruning")
        if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0.0 <= float(target) < 1.0:
            raise ConfigError(f"target={target!r} must be a fraction in [0, 1), e.g. 0.9")
        if not isinstance(start_epoch, int) or start_epoch < 0:
            raise ConfigError(f"start_epoch={start_epoch!r} must be an integer >= 0")
        if end_epoch is not None and (not isinstance(end_epoch, int) or end_epoch < start_epoch):
            raise ConfigError(f"end_epoch={end_epoch!r} must be an integer >= start_epoch={start_epoch}")
        if every is not None and (not isinstance(every, int) or every < 1):
            raise ConfigError(f"every={every!r} must be a positive number of epochs")
        scope = scope if scope is not None else ("global" if method == "unstructured" else "layer")
        if scope not in SCOPES:
            raise ConfigError(f"scope={scope!r} is unknown; use 'global' or 'layer'")
        check_criterion(method, criterion)
        if input_size is not None and (not isinstance(input_size, int) or input_size < 1):
            raise ConfigError(f"input_size={input_size!r} must be a positive number of pixels")
        self.method, self.target, self.criterion = method, float(target), criterion
        self.start_epoch, self.end_epoch = start_epoch, end_epoch
        self.every = every if every is not None else self.default_every
        self.scope, self.seed, self.input_size = scope, int(seed), input_size
        self.skip = list(skip or [])
        if (overrides or reduce) and (method != "structured" or scope != "layer"):
            raise ConfigError("overrides and reduce= set per-layer channel ratios: use them with method='structured' "
                              "and scope='layer'")
        if overrides is not None and (not isinstance(overrides, dict) or not all(
                isinstance(v, (int, float)) and 0.0 <= v < 1.0 for v in overrides.values())):
            raise ConfigError(f"overrides={overrides!r} must map module names to ratios in [0, 1)")
        self.overrides: Dict[str, float] = {k: float(v) for k, v in (overrides or {}).items()}
        self.reduce = _parse_reduce(reduce) if reduce is not None else None
        if (round_to is not None or calib_batches is not None) and method != "structured":
            raise ConfigError("round_to and calib_batches shape structured pruning (whole channels): use them with "
                              "method='structured'")
        self.round_to = resolve_round_to(round_to)
        check_round_to(self.round_to)
        if calib_batches is not None and (isinstance(calib_batches, bool) or not isinstance(calib_batches, int)
                                          or calib_batches < 0):
            raise ConfigError(f"calib_batches={calib_batches!r} must be an integer >= 0")
        self.calib_batches = CALIB_BATCHES if calib_batches is None else calib_batches
        self.resolved: Optional[Dict[str, Any]] = None  # what ``reduce`` turned into, once measured
        self.masks: Optional[Masks] = None
        self._masker: Optional[MaskCallback] = None
        self.history: List[Dict[str, Any]] = []  # one entry per pruning event, JSON-able

    # -- the window ------------------------------------------------------------------------------------------------
    def end(self, state: TrainState) -> int:
        """Last boundary of the pruning window (an epoch count), within the run."""
        end = self.end_epoch if self.end_epoch is not None else round(self.default_end * state.epochs)
        return min(max(end, self.start_epoch), max(state.epochs, self.start_epoch))

    def check_window(self, state: TrainState) -> None:
        """A window that starts after the run ends would silently prune nothing: say so instead."""
        if self.start_epoch > state.epochs:
            raise ConfigError(f"start_epoch={self.start_epoch} is after the run's last epoch ({state.epochs}); "
                              f"lower start_epoch or train for more epochs")

    def on_train_start(self, state: TrainState) -> None:
        """Refuse a window that starts after the run ends, then run boundary 0 (nothing trained yet)."""
        self.check_window(state)
        self.on_boundary(state, 0)

    def on_epoch_end(self, state: TrainState) -> None:
        """Epoch ``state.epoch`` is done: run boundary ``epoch + 1`` (after validation, before the checkpoint)."""
        self.on_boundary(state, state.epoch + 1)

    def on_boundary(self, state: TrainState, boundary: int) -> None:
        """``boundary`` epochs are done; epoch-level schedules prune here."""

    # -- unstructured masks ----------------------------------------------------------------------------------------
    def prune_weights(self, model: nn.Module, ratio: float) -> Masks:
        """Exact-count magnitude masks at ``ratio`` (pruned weights zeroed now); see ``prunekit.sparse``."""
        scope = "layer" if self.scope == "layer" else "global"
        allocation = UNSTRUCTURED_CRITERIA[self.criterion] if scope == "global" else None
        return magnitude_prune(model, ratio=ratio, scope=scope, allocation=allocation, skip=self.skip or None)

    def set_masks(self, state: TrainState, masks: Masks) -> None:
        """Adopt ``masks``: pruned weights and their optimizer state (momentum, moments) are zeroed now."""
        self.masks, self._masker = masks, MaskCallback(masks)
        self._masker.on_train_start(state)

    def on_after_backward(self, state: TrainState) -> None:
        """Zero the gradients of masked weights, once unstructured masks are set."""
        if self._masker is not None:
            self._masker.on_after_backward(state)

    def on_step_end(self, state: TrainState) -> None:
        """Re-zero masked weights (and their optimizer state) after the optimizer step, once masks are set."""
        if self._masker is not None:
            self._masker.on_step_end(state)

    # -- structured targets ----------------------------------------------------------------------------------------
    def plan_channels(self, state: TrainState, example: torch.Tensor, ratio: float, overrides: Dict[str, float],
                      boundary: int, original: Optional[Dict[str, int]] = None,
                      **settings: Any) -> Tuple[Plan, DependencyGraph]:
        """The plan of one structured stage, by the one planner (``make_plan``, checked as every one-shot plan):
        ``ratio`` (+ ``overrides``) of the ``original`` widths, ``round_to`` kept, data-driven criteria scoring
        ``calib_batches`` training batches; ``settings`` (schedule, round, epoch) are recorded in the plan."""
        plan, graph = checked_plan(state.unwrapped, (example,), ratio=ratio, criterion=self.criterion,
                                   scope=PLAN_SCOPES[self.scope], overrides=overrides, ignore=self.skip,
                                   round_to=self.round_to, data=calibration(state, self.calib_batches),
                                   seed=self.seed * 1_000_003 + boundary, original=original)
        plan.settings.update(settings)
        return plan, graph

    def resolve_reduce(self, model: nn.Module, example: torch.Tensor) -> None:
        """Turn ``reduce`` into a channel ratio (+ overrides) measured on ``model`` (the original), once (layer
        scope: the counts do not depend on the scores, so the search plans with l2)."""
        if self.reduce is None or self.resolved is not None:
            return
        found = search_ratio(model, (example,), self.reduce, ignore=self.skip, overrides=self.overrides or None,
                             round_to=self.round_to)
        self._adopt({"reduce": self.reduce, "ratio": float(found.ratio), "overrides": dict(found.overrides),
                     "achieved": float(found.achieved), "target": reach(found.metric, found.target, found.achieved)})

    def _adopt(self, resolved: Dict[str, Any]) -> None:
        self.resolved = resolved
        self.target = float(resolved["ratio"])
        self.overrides = {**{k: float(v) for k, v in resolved.get("overrides", {}).items()}, **self.overrides}

    def ratios_at(self, curve: str, progress: float) -> Tuple[float, Dict[str, float]]:
        """(ratio, per-module overrides) ``progress`` of the way to the final channel ratios along ``curve``."""
        return (ratio_at(curve, progress, self.target),
                {k: ratio_at(curve, progress, v) for k, v in self.overrides.items()})

    # -- state -----------------------------------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        """Checkpoint state: the schedule's class name, history, masks, the resolved ``reduce`` and
        ``extra_state()``.
        """
        return {"schedule": type(self).__name__, "history": self.history,
                "masks": self.masks.state_dict() if self.masks is not None else None, "resolved": self.resolved,
                **self.extra_state()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore ``state_dict()``'s output; raises CheckpointError when it was saved by another schedule."""
        if not isinstance(state, dict) or state.get("schedule") != type(self).__name__:
            got = state.get("schedule") if isinstance(state, dict) else type(state).__name__
            raise CheckpointError(f"the checkpoint holds {got!r} schedule state, not {type(self).__name__!r}; "
                                  f"resume with the same schedule or use a new --out folder")
        self.history = [dict(h) for h in state.get("history") or []]
        masks = state.get("masks")
        self.masks = Masks.from_state_dict(masks) if masks is not None else None
        self._masker = MaskCallback(self.masks) if self.masks is not None else None
        if state.get("resolved"):
            self._adopt(dict(state["resolved"]))
        self.load_extra_state(state)

    def extra_state(self) -> Dict[str, Any]:
        """Subclass state (tensors and JSON-able values) saved beside history and masks."""
        return {}

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        """Restore what ``extra_state`` saved (the base saves nothing)."""

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(method={self.method!r}, target={self.target}, criterion={self.criterion!r}, "
                f"start_epoch={self.start_epoch}, end_epoch={self.end_epoch}, every={self.every})")


def step_window(state: TrainState, start_epoch: int, end_epoch: int,
                update_every: Optional[int]) -> Tuple[int, int, int]:
    """(first step, last step, steps between updates) of a step-level schedule's window."""
    first, last = start_epoch * state.steps_per_epoch, end_epoch * state.steps_per_epoch
    every = update_every or state.steps_per_epoch
    return first, last, max(1, every)


def check_update_every(update_every: Optional[int]) -> Optional[int]:
    """Return ``update_every`` (None or a positive int of optimizer steps); raise ConfigError otherwise."""
    if update_every is not None and (isinstance(update_every, bool) or not isinstance(update_every, int)
                                     or update_every < 1):
        raise ConfigError(f"update_every={update_every!r} must be a positive number of optimizer steps")
    return update_every


def tensor_dict(d: Optional[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """Detached CPU copies of a dict of tensors (None gives {}), safe to put in a checkpoint."""
    return {k: v.detach().cpu().clone() for k, v in (d or {}).items()}


def _parse_reduce(reduce: Union[str, Dict[str, float]]) -> Dict[str, float]:
    if isinstance(reduce, str):
        return parse_reduce(reduce)
    if isinstance(reduce, dict) and len(reduce) == 1:
        (metric, value), = reduce.items()
        return parse_reduce(f"{metric}={value}")
    raise ConfigError(f"reduce={reduce!r} must be 'params=0.4' or {{'params': 0.4}} (one metric)")
