"""Training: the loop around a model, kept out of the model itself.

An epoch-batch iterator, one training step, a callback list and the epoch metrics; the
public front is :meth:`deepnet.Network.fit`.
"""

from .history import History

__all__ = ["History"]
