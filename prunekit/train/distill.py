"""Knowledge distillation for fine-tuning a pruned model: the unpruned model is the teacher.

Hinton et al. 2015: the student matches the teacher's softened class distribution as well as the labels,

    loss = (1 - alpha) * CE(student, y) + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))

T^2 keeps the gradient scale of the soft term independent of T. A pruned network starts close to its teacher, so
its soft targets say more per image than the labels; pruning tools (Torch-Pruning's examples, NVIDIA ModelOpt)
use it to recover accuracy. It is not a free gain: on UC Merced vgg_small (alpha 0.7, T 4) it lowered accuracy
by 0.1-1.3 points against plain fine-tuning (docs/journal/2026-11-26-criteria-ucmerced.md), so it is opt-in.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(teacher_T || student_T), averaged over the batch (computed in float32)."""
    t = temperature
    log_s = torch.log_softmax(student.float() / t, dim=1)
    log_t = torch.log_softmax(teacher.float() / t, dim=1)
    return nn.functional.kl_div(log_s, log_t, reduction="batchmean", log_target=True) * (t * t)


def frozen_teacher(model: nn.Module, device: torch.device | str) -> nn.Module:
    """A private, frozen, eval-mode copy: training the student can never touch the teacher's weights or BN stats."""
    teacher = copy.deepcopy(model).to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher
