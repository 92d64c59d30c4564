"""Training and evaluation: one loop with hooks that pruning schedules use."""
from .callbacks import Callback, TrainState
from .config import TrainConfig
from .loop import TrainResult, evaluate, fit

__all__ = ["Callback", "TrainState", "TrainConfig", "TrainResult", "evaluate", "fit"]
