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

    unchecked = make_plan(HardCoded(), torch.randn(1, 3, 4, 4), ratio=0.5)  # deciding alone does not run it
    assert [g.key for g in unchecked.groups] == ["a.weight:0"]


class _ReadsAValue(nn.Module):
    """Its forward reads a number (``float(...)``), which no meta tensor can give."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.fc = nn.Conv2d(3, 8, 1), nn.Linear(8, 2)

    def forward(self, x):
        y = self.a(x)
        return self.fc(y.mean((2, 3))) * (1.0 if float(y.mean()) > -1e9 else 0.0)


def test_a_plan_that_cannot_be_dry_run_says_so_instead_of_passing_silently():
    with pytest.warns(UserWarning, match="could not be checked on the meta device"):
        plan, _ = checked_plan(_ReadsAValue(), torch.randn(1, 3, 4, 4), ratio=0.5)
    assert plan.settings["verified"] is False and plan.groups


def test_a_checked_plan_is_marked_neither_way_when_it_ran():
    plan, _ = checked_plan(nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 2, 1)),
                           torch.randn(1, 3, 4, 4), ratio=0.5)
    assert "verified" not in plan.settings and plan.groups
