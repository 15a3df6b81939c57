"""Optimizers: in-place updates of named parameters, state kept per parameter name.

Each update is one call into the backend (``ops.*_update_``), which the NumPy backend
runs without temporaries and the CuPy backend as one fused kernel per parameter.
Notation: w a parameter, g = ∂f/∂w, η the learning rate, t the step count.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from .backend import Array, Ops, to_device, to_host
from .classnames import ClassRegistry, qualified_name
from .layers.base import Parameter


class StepScalars:
    """The per-step scalars of an optimizer in device memory, for a captured step (a CUDA
    graph freezes kernel arguments, so nothing that changes between steps may be a Python
    number): the step count t and the learning rate η in float64 (where the device has it),
    η again in the parameters' dtype, and the values a subclass derives from them each step
    (Adam: η_t, ε̂, d).  :meth:`set_lr` writes a new η between steps (one fill, no read)."""

    def __init__(self, ops: Ops, dtype: Any, iterations: int, lr: float) -> None:
        wide = ops.float64 if ops.has_float64 else ops.float32
        self.ops = ops
        self.t = ops.full((), float(iterations), wide)
        self.lr = ops.full((), lr, wide)
        self.lr_w = ops.full((), lr, dtype)
        self.host_lr = lr
        self.derived: dict[str, Array] = {}

    def set_lr(self, lr: float) -> None:
        """η ← ``lr`` on the device, if it changed (outside a capture)."""
        if lr != self.host_lr:
            self.ops.fill_(self.lr, lr)
            self.ops.fill_(self.lr_w, lr)
            self.host_lr = lr


class Optimizer:
    """Base optimizer.

    Common options, applied in this order each step:

    * ``clip_norm``: scale all gradients so their global norm ‖g‖ is at most this
      (computed on the device, no host sync);
    * ``weight_decay``: L2 decay, g ← g + λ w (coupled; see :class:`AdamW` for decoupled);
    * the update rule of the subclass (:meth:`update`);
    * ``max_norm``: after the update, rescale each row of every 2-D weight (the incoming
      weights of one unit) to norm at most this.
    """

    #: every optimizer class by qualified name (``module.QualName``): checkpoints name optimizers through it
    registry: ClassVar[ClassRegistry] = ClassRegistry("optimizer")
    slots: ClassVar[tuple[str, ...]] = ()
    #: whether :meth:`step` can take its per-step values from device memory (``scalars``),
    #: so a CUDA graph may capture it.  A subclass that overrides :meth:`step`,
    #: :meth:`update` or :meth:`update_many` is not, unless it sets this in its own body
    #: (then it must read η and anything else that changes per step from ``scalars``).
    capturable: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Optimizer.registry.add(cls)

    def __init__(self, lr: float = 0.01, weight_decay: float = 0.0, clip_norm: float | None = None,
                 max_norm: float | None = None) -> None:
        if not 0 < lr < math.inf:
            raise ValueError(f"{type(self).__name__}: learning rate must be positive and finite, got {lr!r}")
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.clip_norm = None if clip_norm is None else float(clip_norm)
        self.max_norm = None if max_norm is None else float(max_norm)
        self.iterations = 0
        self.state: dict[str, dict[str, Array]] = {}
        #: the backend the state lives on (the network binds it: :meth:`bind`)
        self.ops: Ops | None = None
        self._initial_config: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return type(self).__name__

    def initial_config(self) -> dict[str, Any]:
        """:meth:`get_config` as it was when first asked (``fit`` asks before its first step), so
        later changes of the learning rate by schedules do not count as a different run."""
        if self._initial_config is None:
            self._initial_config = dict(self.get_config())
        return dict(self._initial_config)

    def get_config(self) -> dict[str, Any]:
        cfg = {"lr": self.lr, "weight_decay": self.weight_decay}
        if self.clip_norm is not None:
            cfg["clip_norm"] = self.clip_norm
        if self.max_norm is not None:
            cfg["max_norm"] = self.max_norm
        return cfg

    def __repr__(self) -> str:
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in self.get_config().items())})"

    def _slots_for(self, p: Parameter, ops: Ops) -> dict[str, Array]:
        """Create the state slots of a parameter on first use: zeros with its shape, dtype and
        memory layout (``ops.zeros_like``)."""
        st = self.state[p.name] = {k: ops.zeros_like(p.data) for k in self.slots}
        return st

    def can_capture(self) -> bool:
        """Whether :meth:`step` takes every per-step value from ``scalars`` (see :attr:`capturable`)."""
        cls = type(self)
        if "capturable" in cls.__dict__:
            return bool(cls.capturable)
        return all(getattr(cls, m).__module__ == __name__ for m in ("step", "update", "update_many"))

    def device_scalars(self, ops: Ops, dtype: Any) -> StepScalars:
        """The per-step scalars of this optimizer on ``ops``, starting at its current step."""
        return StepScalars(ops, dtype, self.iterations, self.lr)

    def advance(self, scalars: StepScalars, ops: Ops) -> None:
        """t ← t + 1 on the device, then the values derived from t and η (none here)."""
        scalars.t += 1.0

    def step(self, params: dict[str, Parameter], ops: Ops | None = None,
             scalars: StepScalars | None = None) -> None:
        """Apply one update to every parameter (keys are the stable parameter names) on the
        bound backend (or ``ops``).  A parameter no backward pass reached has g = 0 (reading
        ``p.grad`` zeroes it).  With ``scalars`` (a captured step) the step count and η come
        from device memory and no Python state changes: the caller counts :attr:`iterations`."""
        ops = self._ops_for_step(ops)
        if scalars is None:
            self.iterations += 1
        else:
            self.advance(scalars, ops)
        if self.clip_norm is None and self.max_norm is None and not self.coupled_weight_decay:
            # the common case: one multi-tensor update for all parameters (see update_many)
            ws, gs, states, state = [], [], [], self.state
            for p in params.values():
                w, g = p.data_and_grad()
                ws.append(w)
                gs.append(g)
                st = state.get(p.name)
                states.append(self._slots_for(p, ops) if st is None else st)
            if scalars is None:
                self.update_many(ws, gs, states, ops)
            else:
                self.update_many(ws, gs, states, ops, scalars)
            return
        scale = self._clip_scale(params, ops) if self.clip_norm is not None else None
        wd = self.coupled_weight_decay
        max_norm = self.max_norm
        update = self.update
        for p in params.values():
            g = p.grad
            if scale is not None:
                g *= scale
            if wd:
                g += p.data * wd
            st = self.state.get(p.name)
            if scalars is None:
                update(p.data, g, self._slots_for(p, ops) if st is None else st, ops)
            else:
                update(p.data, g, self._slots_for(p, ops) if st is None else st, ops, scalars)
            if max_norm is not None and p.data.ndim == 2:
                self._apply_max_norm(p.data, ops)

    def create_slots(self, params: dict[str, Parameter], ops: Ops) -> None:
        """Create every parameter's state slots now (zeros) instead of at its first update (a
        captured run allocates them before any graph's memory scope)."""
        for p in params.values() if self.slots else ():
            if p.name not in self.state:
                self._slots_for(p, ops)

    def match_parameters(self, params: dict[str, Parameter], ops: Ops) -> None:
        """Give every state slot its parameter's memory layout, values kept (after the
        backend re-laid out a parameter, or state was loaded or moved: a column-major
        weight with row-major slots would leave the fast kernels).  Training calls this
        once before its first step."""
        for p in params.values():
            st = self.state.get(p.name)
            for k, a in (st or {}).items():
                if a.shape == p.shape and not ops.same_layout(a, p.data):
                    st[k] = ops.assign_(ops.zeros_like(p.data), a)

    @property
    def coupled_weight_decay(self) -> float:
        """λ of the L2 term added to the gradient (0 for decoupled decay)."""
        return self.weight_decay

    def update(self, w: Array, g: Array, state: dict[str, Array], ops: Ops,
               scalars: StepScalars | None = None) -> None:
        """One parameter's update (η from ``scalars`` when given)."""
        raise NotImplementedError

    def update_many(self, ws: list[Array], gs: list[Array], states: list[dict[str, Array]], ops: Ops,
                    scalars: StepScalars | None = None) -> None:
        """:meth:`update` for all parameters at once.  Subclasses with a multi-tensor
        backend kernel override this (one call per step instead of one per parameter)."""
        for w, g, st in zip(ws, gs, states, strict=True):
            if scalars is None:
                self.update(w, g, st, ops)
            else:
                self.update(w, g, st, ops, scalars)

    def global_grad_norm(self, params: dict[str, Parameter], ops: Ops) -> Array:
        """‖g‖ over all parameters, as a 0-d device array."""
        total = None
        for p in params.values():
            s = ops.sum_squares(p.grad)
            total = s if total is None else total + s
        return ops.xp.sqrt(total)

    def _clip_scale(self, params: dict[str, Parameter], ops: Ops) -> Array:
        norm = self.global_grad_norm(params, ops)
        return ops.xp.minimum(ops.xp.ones_like(norm), self.clip_norm / (norm + 1e-6))

    def _apply_max_norm(self, w: Array, ops: Ops) -> None:
        xp = ops.xp
        norms = xp.sqrt(xp.sum(w * w, axis=1, keepdims=True))
        w *= xp.minimum(xp.ones_like(norms), self.max_norm / (norms + 1e-7))

    # -- state that moves with the model and goes into checkpoints ---------------
    def state_dict(self) -> dict[str, Any]:
        """Host copy of the optimizer: config, step count and per-parameter slots."""
        return {
            "type": self.name,
            "class": qualified_name(type(self)),
            "config": self.get_config(),
            "iterations": self.iterations,
            "slots": {pname: {k: to_host(v).copy() for k, v in st.items()} for pname, st in self.state.items()},
        }

    def load_state_dict(self, sd: dict[str, Any], ops: Ops) -> None:
        for k, v in sd.get("config", {}).items():
            setattr(self, k, v)
        self.iterations = int(sd.get("iterations", 0))
        self.state = {pname: {k: to_device(v, ops, copy=True) for k, v in st.items()}
                      for pname, st in sd.get("slots", {}).items()}
        self.ops = ops

    def _ops_for_step(self, ops: Ops | None) -> Ops:
        if ops is not None:
            return ops
        if self.ops is None:
            raise ValueError(f"{self.name}.step: no backend: give ops, or bind the optimizer first "
                             "(a Network binds the optimizer it is given)")
        return self.ops

    def bind(self, ops: Ops) -> Optimizer:
        """Compute on ``ops`` and keep the state there (the network binds its optimizer when it
        takes it and when it moves); the state moves if it lives elsewhere."""
        return self if ops is self.ops else self.to(ops)

    def to(self, ops: Ops) -> Optimizer:
        """Move the optimizer state to another backend."""
        self.state = {pname: {k: to_device(v, ops) for k, v in st.items()} for pname, st in self.state.items()}
        self.ops = ops
        return self


class SGD(Optimizer):
    """Plain gradient descent, the seed's rule: w ← w − η g.  With ``momentum`` μ > 0:
    v ← μ v + g, w ← w − η v; with ``nesterov``: w ← w − η (g + μ v)."""

    def __init__(self, lr: float = 0.1, momentum: float = 0.0, nesterov: bool = False, **kw: Any) -> None:
        super().__init__(lr, **kw)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"SGD: momentum must be in [0, 1), got {momentum!r}")
        if nesterov and momentum == 0.0:
            raise ValueError("SGD: nesterov=True needs momentum > 0")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.slots = ("velocity",) if momentum else ()

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}

    def step(self, params: dict[str, Parameter], ops: Ops | None = None,
             scalars: StepScalars | None = None) -> None:
        ops = self._ops_for_step(ops)
        if self.momentum or self.weight_decay or self.clip_norm is not None or self.max_norm is not None:
            return super().step(params, ops, scalars)
        # plain w ← w − η g; a parameter no backward pass reached has g = 0 and is left alone
        if scalars is None:
            self.iterations += 1
        else:
            self.advance(scalars, ops)
        ws, gs = [], []
        for p in params.values():
            if p.has_grad:
                w, g = p.data_and_grad()
                ws.append(w)
                gs.append(g)
        ops.sgd_update_many_(ws, gs, self.lr if scalars is None else scalars.lr_w)

    def update(self, w: Array, g: Array, state: dict[str, Array], ops: Ops,
               scalars: StepScalars | None = None) -> None:
        lr = self.lr if scalars is None else scalars.lr_w
        if self.momentum:
            ops.momentum_update_(w, g, state["velocity"], lr, self.momentum, self.nesterov)
        else:
            ops.sgd_update_(w, g, lr)

    def update_many(self, ws: list[Array], gs: list[Array], states: list[dict[str, Array]], ops: Ops,
                    scalars: StepScalars | None = None) -> None:
        lr = self.lr if scalars is None else scalars.lr_w
        if self.momentum:
            ops.momentum_update_many_(ws, gs, [st["velocity"] for st in states], lr, self.momentum,
                                      self.nesterov)
        else:
            ops.sgd_update_many_(ws, gs, lr)


class Momentum(SGD):
    """SGD with (Nesterov) momentum, μ = 0.9 by default."""

    def __init__(self, lr: float = 0.01, momentum: float = 0.9, nesterov: bool = False, **kw: Any) -> None:
        super().__init__(lr, momentum=momentum, nesterov=nesterov, **kw)


def _check_eps(name: str, eps: float) -> None:
    """Refuse an ε that is negative, NaN or infinite (the update divides by √v + ε)."""
    if not 0.0 <= eps < math.inf:
        raise ValueError(f"{name}: eps must be a non-negative finite number, got {eps!r}")


class Adam(Optimizer):
    """Adam: m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g², w ← w − η m̂/(√v̂ + ε)
    with m̂ = m/(1−β₁ᵗ), v̂ = v/(1−β₂ᵗ)."""

    slots = ("m", "v")
    decoupled = False          #: AdamW: weight decay applied to w directly, not added to g

    def __init__(self, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 **kw: Any) -> None:
        super().__init__(lr, **kw)
        for label, b in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= b < 1.0:
                raise ValueError(f"{self.name}: {label} must be in [0, 1), got {b!r}")
        _check_eps(self.name, eps)
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps}

    def step_scalars(self) -> tuple[float, float, float]:
        """(η_t, ε̂, d) of step t = ``iterations``, the same for every parameter.

        Bias correction folded into two scalars: with m̂ = m/(1−β₁ᵗ) and v̂ = v/(1−β₂ᵗ),
        η m̂/(√v̂ + ε) = η_t m/(√v + ε̂),  η_t = η √(1−β₂ᵗ)/(1−β₁ᵗ),  ε̂ = ε √(1−β₂ᵗ);
        decoupled weight decay (AdamW) first multiplies w by d = 1 − ηλ (d = 1: none).
        """
        t = self.iterations
        c2 = math.sqrt(1.0 - self.beta2 ** t)      # sqrt, not ** 0.5: the device computes the same
        lr_t = self.lr * c2 / (1.0 - self.beta1 ** t)
        eps_hat = c2 * self.eps
        decay = 1.0 - self.lr * self.weight_decay if self.decoupled else 1.0
        return lr_t, eps_hat, decay

    def device_scalars(self, ops: Ops, dtype: Any) -> StepScalars:
        sc = super().device_scalars(ops, dtype)
        sc.derived = {"lr_t": ops.zeros((), dtype), "eps_hat": ops.zeros((), dtype)}
        if self.decoupled:
            sc.derived["decay"] = ops.zeros((), dtype)
        return sc

    def advance(self, scalars: StepScalars, ops: Ops) -> None:
        """t ← t + 1, then η_t, ε̂ (and d) of step t on the device (see :meth:`step_scalars`)."""
        scalars.t += 1.0
        d = scalars.derived
        ops.adam_scalars_(scalars.t, scalars.lr, d["lr_t"], d["eps_hat"], d.get("decay"), self.beta1,
                          self.beta2, self.eps, self.weight_decay)

    def _scalars(self, scalars: StepScalars | None) -> tuple[Any, Any, Any]:
        if scalars is None:
            return self.step_scalars()
        d = scalars.derived
        return d["lr_t"], d["eps_hat"], d.get("decay", 1.0)

    def update(self, w: Array, g: Array, state: dict[str, Array], ops: Ops,
               scalars: StepScalars | None = None) -> None:
        lr_t, eps_hat, decay = self._scalars(scalars)
        ops.adam_update_(w, g, state["m"], state["v"], lr_t, self.beta1, self.beta2, eps_hat, decay)

    def update_many(self, ws: list[Array], gs: list[Array], states: list[dict[str, Array]], ops: Ops,
                    scalars: StepScalars | None = None) -> None:
        lr_t, eps_hat, decay = self._scalars(scalars)
        ops.adam_update_many_(ws, gs, [st["m"] for st in states], [st["v"] for st in states], lr_t,
                              self.beta1, self.beta2, eps_hat, decay)

    @property
    def coupled_weight_decay(self) -> float:
        return 0.0 if self.decoupled else self.weight_decay


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): w ← w − η λ w − η m̂/(√v̂ + ε)."""

    decoupled = True

    def __init__(self, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 weight_decay: float = 0.01, **kw: Any) -> None:
        super().__init__(lr, beta1, beta2, eps, weight_decay=weight_decay, **kw)


class RMSProp(Optimizer):
    """RMSProp: s ← ρ s + (1−ρ) g², w ← w − η g/(√s + ε)."""

    slots = ("s",)

    def __init__(self, lr: float = 1e-3, rho: float = 0.9, eps: float = 1e-8, **kw: Any) -> None:
        super().__init__(lr, **kw)
        if not 0.0 <= rho < 1.0:
            raise ValueError(f"{self.name}: rho must be in [0, 1), got {rho!r}")
        _check_eps(self.name, eps)
        self.rho, self.eps = float(rho), float(eps)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rho": self.rho, "eps": self.eps}

    def update(self, w: Array, g: Array, state: dict[str, Array], ops: Ops,
               scalars: StepScalars | None = None) -> None:
        ops.rmsprop_update_(w, g, state["s"], self.lr if scalars is None else scalars.lr_w, self.rho, self.eps)


OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": SGD, "momentum": Momentum, "adam": Adam, "adamw": AdamW, "rmsprop": RMSProp,
}


def get_optimizer(spec: str | Optimizer, **kwargs: Any) -> Optimizer:
    if isinstance(spec, Optimizer):
        return spec
    cls = OPTIMIZERS.get(spec.lower()) if isinstance(spec, str) else None
    if cls is None:
        raise ValueError(f"unknown optimizer {spec!r}: expected one of {sorted(OPTIMIZERS)}")
    return cls(**kwargs)
