"""Training and evaluation: one loop with hooks that pruning schedules use."""
from .callbacks import Callback, TrainState
from .config import TrainConfig
from .loop import TrainResult, evaluate, fit
from .masks import MaskCallback
from .scorer import data_scorer

__all__ = ["Callback", "MaskCallback", "TrainState", "TrainConfig", "TrainResult", "data_scorer", "evaluate", "fit"]
