"""When to prune: one-shot, iterative, gradual (Zhu & Gupta), dynamic with regrowth (DNS, RigL) and soft filter
pruning, each a training :class:`~prunekit.train.Callback` in its own small file, registered by name.

    from prunekit.schedules import build_schedule
    schedule = build_schedule("gradual", method="unstructured", target=0.9, start_epoch=2, end_epoch=20)
    result = fit(model, data, TrainConfig(epochs=30), callbacks=[schedule], out_dir="runs/gradual")

Every schedule's state (step, masks, dense weights, plans) is saved in the training checkpoint, so a killed run
resumes and ends exactly as an uninterrupted one.
"""
from __future__ import annotations

from ..registry import Registry

SCHEDULES: Registry = Registry("schedule")

from . import dns, gradual, iterative, oneshot, rigl, soft  # noqa: E402,F401  (register the schedules)
from .base import Schedule  # noqa: E402
from .config import ScheduleConfig, build_schedule, schedule_options  # noqa: E402
from .curves import CURVES, ratio_at  # noqa: E402
from .dns import DynamicSurgery  # noqa: E402
from .gradual import Gradual  # noqa: E402
from .iterative import Iterative  # noqa: E402
from .oneshot import OneShot  # noqa: E402
from .rigl import RigL  # noqa: E402
from .soft import SoftFilter  # noqa: E402

__all__ = ["SCHEDULES", "Schedule", "ScheduleConfig", "build_schedule", "schedule_options", "CURVES", "ratio_at",
           "OneShot", "Iterative", "Gradual", "DynamicSurgery", "RigL", "SoftFilter"]
