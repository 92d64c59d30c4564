"""The plan's dry run on the meta device (prunekit.apply.verify), as every structured path runs it."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit.apply import checked_plan
from prunekit.plan import make_plan


def test_verify_leaves_unrunnable_groups_whole():
    class HardCoded(nn.Module):  # reshapes with a literal width: pruning conv 'a' would break it
        def __init__(self) -> None:
            super().__init__()
            self.a, self.fc = nn.Conv2d(3, 8, 1), nn.Linear(8, 2)

        def forward(self, x):
            return self.fc(self.a(x).mean((2, 3)).reshape(-1, 8))

    plan, _ = checked_plan(HardCoded(), torch.randn(1, 3, 4, 4), ratio=0.5)
    assert plan.groups == [] and "a.weight:0" in plan.skipped


class _NeedsValues(nn.Module):
    """Reads a value in its forward (no meta run) and reshapes with a literal width: pruning conv 'a' breaks it."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.fc = nn.Conv2d(3, 8, 1), nn.Linear(8, 2)

    def forward(self, x):
        h = self.a(x).mean((2, 3))
        scale = 2.0 if h.abs().sum().item() > 1e9 else 1.0
        return self.fc(scale * h.reshape(-1, 8))


def test_verify_runs_on_a_real_copy_when_the_model_needs_values():
    model = _NeedsValues()
    plan, _ = checked_plan(model, torch.randn(1, 3, 4, 4), ratio=0.5)
    assert plan.groups == [] and "a.weight:0" in plan.skipped
    assert model.a.out_channels == 8  # the copies were pruned, not the model


def test_a_plan_that_cannot_be_verified_says_so():
    class Uncopyable(_NeedsValues):
        def __deepcopy__(self, memo):
            raise TypeError("cannot copy this model")

    with pytest.warns(UserWarning, match="not verified.*cannot copy"):
        plan, _ = checked_plan(Uncopyable(), torch.randn(1, 3, 4, 4), ratio=0.5)
    assert plan.groups and not plan.skipped  # left as planned, unchecked


def test_deciding_alone_does_not_dry_run():
    class HardCoded(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.fc = nn.Conv2d(3, 8, 1), nn.Linear(8, 2)

        def forward(self, x):
            return self.fc(self.a(x).mean((2, 3)).reshape(-1, 8))

    unchecked = make_plan(HardCoded(), torch.randn(1, 3, 4, 4), ratio=0.5)
    assert [g.key for g in unchecked.groups] == ["a.weight:0"]
