"""Training: the loop around a model, kept out of the model itself.

:class:`Trainer` (the run, given a :class:`FitSettings`), :class:`EpochBatches` (the epoch-batch iterator),
:func:`train_step` (one step), :class:`EpochMetrics` (the epoch's loss and accuracy) and
the callbacks that carry the rest (checkpoint saving, the NaN guard, history, printing).
The public front is :meth:`deepnet.Network.fit`.
"""

from .batches import Batch, EpochBatches
from .fit_settings import FitSettings
from .history import History
from .metrics import EpochMetrics
from .step import train_step
from .trainer import Trainer

__all__ = ["Batch", "EpochBatches", "EpochMetrics", "FitSettings", "History", "Trainer", "train_step"]
