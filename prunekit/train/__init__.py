"""Training and evaluation: one loop with hooks that pruning schedules use, and per-epoch logs people read."""
from .callbacks import Callback, TrainState
from .config import TrainConfig
from .logs import CsvLogger, RunLog, RunLogger, TensorBoardLogger, run_log
from .loop import TrainResult, evaluate, fit
from .masks import MaskCallback
from .scorer import data_scorer

__all__ = ["Callback", "CsvLogger", "MaskCallback", "RunLog", "RunLogger", "TensorBoardLogger", "TrainState",
           "TrainConfig", "TrainResult", "data_scorer", "evaluate", "fit", "run_log"]
