"""When to prune: one-shot, iterative, gradual (Zhu & Gupta), dynamic with regrowth (DNS, RigL) and soft filter
pruning, each a training :class:`~prunekit.train.Callback` in its own small file, registered by name.

    from prunekit.schedules import build_schedule
    schedule = build_schedule("gradual", method="unstructured", target=0.9, start_epoch=2, end_epoch=20)
    result = fit(model, data, TrainConfig(epochs=30), callbacks=[schedule], out_dir="runs/gradual")

Every schedule's state (step, masks, dense weights, plans) is saved in the training checkpoint, so a killed run
resumes and ends exactly as an uninterrupted one.
"""
from __future__ import annotations

from . import dns, gradual, iterative, oneshot, rigl, soft  # noqa: F401  (register the schedules)
from .base import SCHEDULES, Schedule
from .config import ScheduleConfig, build_schedule, schedule_options
from .curves import CURVES, ratio_at
from .dns import DynamicSurgery
from .gradual import Gradual
from .iterative import Iterative
from .oneshot import OneShot
from .rigl import RigL
from .soft import SoftFilter

__all__ = ["SCHEDULES", "Schedule", "ScheduleConfig", "build_schedule", "schedule_options", "CURVES", "ratio_at",
           "OneShot", "Iterative", "Gradual", "DynamicSurgery", "RigL", "SoftFilter"]
