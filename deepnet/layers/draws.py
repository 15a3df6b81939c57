"""Random draws for layers (dropout masks, augmentation offsets and flips)."""

from __future__ import annotations

from typing import Any

from ..backend import Array


class RandomDraws:
    """What layers that draw random numbers share (a mixin, not a layer: ``Dropout`` and the
    augmentation layers): the network's device generator (``set_rng``), one of their own from
    ``seed`` when used alone, and frozen draws for gradient checks."""

    stochastic = True
    backward_free = True       # no parameters: below the lowest parameter the network skips it
    ops: Any

    def _start_draws(self, seed: int) -> None:
        self.seed = int(seed)
        self.rng: Any = None
        self._frozen = False

    def set_rng(self, rng: Any) -> None:
        """Use this device generator for the draws (done by ``Network``)."""
        self.rng = rng

    @property
    def draws_frozen(self) -> bool:
        """Whether training forwards reuse the last draw (:meth:`freeze_randomness`)."""
        return self._frozen

    def freeze_randomness(self, frozen: bool) -> None:
        """Reuse the last draw for every training forward of the same batch size (gradient checks)."""
        self._frozen = frozen

    def _on_moved(self) -> None:
        self.rng = None
        self._forget_draw()

    def _forget_draw(self) -> None:
        raise NotImplementedError

    def _uniform(self, shape: tuple[int, ...], dtype: Any = None) -> Array:
        """Uniforms [0, 1) on the device (float32 unless ``dtype``), one draw of the generator."""
        if self.rng is None:
            self.rng = self.ops.device_rng(self.seed)
        return self.rng.uniform(shape, self.ops.float32 if dtype is None else dtype)

    def _integers(self, u: Array, k: int) -> Array:
        """⌊u·k⌋ as int64 in 0 … k−1 (clipped: float32 rounding of u·k may reach k)."""
        xp = self.ops.xp
        i = xp.astype(xp.floor(u * float(k)), self.ops.int64)
        return xp.minimum(i, xp.full_like(i, k - 1))
