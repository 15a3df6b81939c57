"""History: the per-epoch metrics a training run returns."""

from __future__ import annotations


class History:
    """Per-epoch metrics returned by :meth:`Network.fit` (host floats)."""

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {}
        self.epochs: list[int] = []
        #: SIGINT or SIGTERM received after the run's last step (the run finished), or None
        self.late_signal: str | None = None

    def append(self, epoch: int, logs: dict[str, float]) -> None:
        self.epochs.append(epoch)
        for k, v in logs.items():
            self.history.setdefault(k, []).append(v)

    def __getitem__(self, key: str) -> list[float]:
        return self.history[key]

    def __contains__(self, key: str) -> bool:
        return key in self.history

    def __repr__(self) -> str:
        return f"History(epochs={len(self.epochs)}, keys={sorted(self.history)})"
