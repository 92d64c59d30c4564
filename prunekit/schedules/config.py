"""One way to build any schedule: ``build_schedule(name, ...)`` and the validated recipe ``ScheduleConfig``
(the CLI flags ``--schedule gradual --start-epoch 2 --end-epoch 20 --ratio 0.9`` and YAML recipes parse into it).

    schedule = build_schedule("gradual", method="unstructured", target=0.9, start_epoch=2, end_epoch=20)
    schedule = ScheduleConfig(schedule="soft", method="structured", ratio=0.4, criterion="pfam").build()
"""
from __future__ import annotations

import inspect
from typing import Any, ClassVar, Dict, List, Literal, Optional, Set

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import ConfigError
from ..train.callbacks import Callback
from .base import SCHEDULES, Schedule


def schedule_options(name: str) -> Set[str]:
    """Keyword options the schedule ``name`` accepts."""
    cls = SCHEDULES.get(name)
    own = set(inspect.signature(cls.__init__).parameters) | set(inspect.signature(Schedule.__init__).parameters)
    return own - {"self", "common"}


def build_schedule(name: str, method: str = "unstructured", target: float = 0.9, criterion: str = "l1",
                   start_epoch: int = 0, end_epoch: Optional[int] = None, every: Optional[int] = None,
                   **opts: Any) -> Callback:
    """The schedule registered as ``name``, ready for ``fit(..., callbacks=[schedule])``.

    ``opts`` are the schedule's own options (``update_every``, ``curve``, ``update_fraction``, ...); an option the
    schedule does not know is an error naming the ones it does.
    """
    cls = SCHEDULES.get(name)
    unknown = sorted(set(opts) - schedule_options(name))
    if unknown:
        raise ConfigError(f"schedule {name!r} has no option {', '.join(map(repr, unknown))}; it takes "
                          f"{', '.join(sorted(schedule_options(name)))}")
    return cls(method=method, target=target, criterion=criterion, start_epoch=start_epoch, end_epoch=end_epoch,
               every=every, **opts)


class ScheduleTiming(BaseModel):
    """When a schedule prunes, and its own knobs: the fields ``prunekit prune --schedule ...`` adds to a run.

    Schedule-specific fields apply only to the schedules that use them; setting one explicitly for a schedule that
    ignores it is an error (:meth:`ScheduleConfig.options`), so a recipe never carries a setting that did nothing.
    """
    cli_group: ClassVar[str] = "schedule: prune while training (--schedule other than oneshot)"

    model_config = ConfigDict(extra="forbid")

    schedule: str = Field("oneshot", description="oneshot, iterative, gradual, dns, rigl or soft",
                          json_schema_extra={"cli_main": True})
    start_epoch: int = Field(0, ge=0, description="epochs trained before pruning starts")
    end_epoch: Optional[int] = Field(None, ge=0, description="epoch by which the final ratio is reached (default: "
                                                             "3/4 of the run; soft: the end)")
    every: Optional[int] = Field(None, ge=1, description="epochs between pruning stages (iterative, soft)")
    update_every: Optional[int] = Field(None, ge=1, description="optimizer steps between mask updates (gradual, "
                                                                "dns, rigl; default one epoch)")
    curve: Optional[Literal["linear", "cubic", "exponential"]] = Field(
        None, description="per-round target curve (iterative; default exponential)")
    rounds: Optional[int] = Field(None, ge=1, description="number of rounds (iterative; overrides --every)")
    initial_ratio: Optional[float] = Field(None, ge=0, lt=1, description="sparsity of the first update (gradual)")
    update_fraction: Optional[float] = Field(None, gt=0, le=1, description="fraction of active weights moved at "
                                                                          "the first update (rigl; default 0.3)")
    margin: Optional[float] = Field(None, ge=0, lt=1, description="hysteresis band around the threshold (dns; "
                                                                 "default 0.1)")
    ramp_epochs: Optional[int] = Field(None, ge=0, description="epochs over which the target ramps up (soft)")
    hard_epochs: Optional[int] = Field(None, ge=0, description="soft-then-hard: remove the channels this many "
                                                               "epochs before the end and train the small model "
                                                               "(soft)")
    zero: Optional[Literal["group", "filters"]] = Field(None, description="what a soft stage zeroes: every coupled "
                                                                        "slice (group, default) or only the "
                                                                        "producing filters (filters, as SFP)")


class ScheduleConfig(ScheduleTiming):
    """The pruning recipe of a training run: what to prune, by which criterion, on which schedule (the Python
    side of ``prunekit prune --schedule``; the CLI's flags parse into the same fields)."""

    method: Literal["unstructured", "structured"] = Field(
        "unstructured", description="remove single weights (masks) or whole channels (smaller dense model)")
    ratio: float = Field(0.9, ge=0, lt=1, description="final fraction of weights (unstructured) or of channels "
                                                       "per group (structured) removed")
    criterion: str = Field("l1", description="unstructured: l1, lamp, erk; structured: any importance criterion "
                                             "(l1, l2, fpgm, pfam, random, ...)")
    scope: Optional[Literal["global", "uniform"]] = Field(
        None, description="one threshold across layers (global), or the ratio in every layer (uniform); default: "
                          "global for unstructured, uniform for structured")
    reduce: Optional[str] = Field(None, description="structured target, e.g. params=0.4 or macs=2x (replaces "
                                                    "ratio; measured on the original model)")
    ignore: List[str] = Field([], description="module names left whole")
    input_size: Optional[int] = Field(None, ge=1, description="input side in pixels for tracing (structured; "
                                                              "default: from the data)")
    seed: int = Field(0, description="seed for criteria that draw randomness")

    _SHARED = ("schedule", "method", "ratio", "criterion", "start_epoch", "end_epoch", "every", "scope", "ignore")

    @model_validator(mode="before")
    @classmethod
    def _renamed_scope(cls, values: Any) -> Any:
        if isinstance(values, dict) and values.get("scope") == "layer":
            raise ValueError("scope 'layer' was renamed 'uniform' (the same ratio in every layer)")
        return values

    def options(self) -> Dict[str, Any]:
        """The schedule-specific options to pass on: set ones, and defaults the schedule accepts."""
        accepted = schedule_options(self.schedule)
        opts: Dict[str, Any] = {}
        for name in type(self).model_fields:
            if name in self._SHARED:
                continue
            value = getattr(self, name)
            if name not in accepted:
                if name in self.model_fields_set and value is not None:
                    raise ConfigError(f"option {name!r} has no meaning for schedule {self.schedule!r}; "
                                      f"remove it (it takes {', '.join(sorted(accepted))})")
                continue
            if value is not None:
                opts[name] = value
        return opts

    def build(self, **extra: Any) -> Callback:
        """Build the configured schedule callback, passing only the options this schedule accepts, plus ``extra``
        options that live outside this config (a structured run's ``round_to`` and ``calib_batches``)."""
        scope = {"uniform": "layer"}.get(self.scope, self.scope)  # the schedules' own word for a per-layer ratio
        return build_schedule(self.schedule, method=self.method, target=self.ratio, criterion=self.criterion,
                              start_epoch=self.start_epoch, end_epoch=self.end_epoch, every=self.every, scope=scope,
                              skip=self.ignore or None, **self.options(), **extra)

    @classmethod
    def from_options(cls, options: Any, **overrides: Any) -> "ScheduleConfig":
        """Pick this config's fields from a wider options object (e.g. the CLI's PruneOptions) and validate.

        ``method``, ``ratio``, ``criterion`` and ``seed`` are always taken; other fields only when set explicitly
        (so a CLI default meant for another command does not leak in); ``image_size`` becomes ``input_size``.
        """
        values = {name: getattr(options, name) for name in cls.model_fields if hasattr(options, name)}
        fields_set = getattr(options, "model_fields_set", set(values))
        values = {k: v for k, v in values.items() if k in fields_set or k in ("method", "ratio", "criterion", "seed")}
        if "input_size" not in values and isinstance(getattr(options, "image_size", None), int):
            values["input_size"] = options.image_size  # structured schedules trace the model at the data's size
        values.update(overrides)
        try:
            return cls(**values)
        except ValidationError as e:  # -> one line naming the field and what is wrong with it
            err = e.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise ConfigError(f"schedule options: {where + ': ' if where else ''}"
                              f"{err['msg'].removeprefix('Value error, ')}") from None
