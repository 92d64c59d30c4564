"""The one validated training configuration; CLI flags and YAML recipes both parse into it."""
from __future__ import annotations

from typing import ClassVar, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field


class TrainConfig(BaseModel):
    """Hyper-parameters of :func:`prunekit.train.fit`. Defaults suit compact CNNs on 64 px aerial scenes."""
    cli_group: ClassVar[str] = "training"

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(30, ge=0, description="training epochs")
    batch_size: int = Field(64, ge=1, description="batch size per process")
    optimizer: Literal["sgd", "adamw"] = Field("sgd", description="sgd (momentum, nesterov) or adamw")
    lr: Optional[float] = Field(None, gt=0, description="peak learning rate (default 0.05 sgd, 0.002 adamw)")
    min_lr_ratio: float = Field(0.01, ge=0, le=1, description="final lr as a fraction of the peak (cosine)")
    warmup_epochs: float = Field(1.0, ge=0, description="linear warm-up length in epochs")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    grad_clip: Optional[float] = Field(5.0, gt=0, description="max global gradient norm; none to disable")
    amp: Literal["auto", "off", "bf16", "fp16"] = Field("auto", description="mixed precision (auto: on for CUDA)")
    patience: Optional[int] = Field(None, ge=1, description="early stop after this many epochs without val gain")
    augment: bool = Field(True, description="aerial augmentations (flips, 90-degree rotations, crops)")
    distill_alpha: float = Field(0.7, ge=0, le=1, description="weight of the distillation term when fit() is "
                                 "given a teacher (0: labels only, 1: teacher only)")
    distill_temperature: float = Field(4.0, gt=0, description="softmax temperature of the distillation term")
    seed: int = 0

    def peak_lr(self) -> float:
        """The learning rate after warm-up: ``lr`` if set, else 0.05 for SGD and 0.002 for AdamW."""
        if self.lr is not None:
            return self.lr
        return 0.05 if self.optimizer == "sgd" else 0.002

    def recovery(self, epochs: int, lr: Optional[float] = None) -> "TrainConfig":
        """Fine-tuning after pruning, derived from this training recipe: ``epochs``, no warm-up, a fifth of the
        peak lr unless ``lr`` is given, the next seed (other batches than the training run)."""
        return self.model_copy(update={"epochs": epochs, "lr": lr or self.peak_lr() / 5, "warmup_epochs": 0,
                                       "seed": self.seed + 1})
