"""Optimizers: in-place updates of named parameters, state kept per parameter name.

An optimizer owns its learning rate η (:class:`LearningRate`: the value as last set, and the
device scalars a step reads, written together), applies its gradient transforms
(:class:`ClipNorm`, :class:`WeightDecay`, :class:`MaxNorm`, or a user's
:class:`GradientTransform`) in order around its update rule, and receives η in that update:
``update(w, g, state, ops, lr)``.  The built-in rules are one call into the backend each
(``ops.*_update_``: NumPy without temporaries, CuPy one fused kernel per parameter); a rule
written with ``ops.xp`` elementwise calls runs on every backend, eagerly and captured.
Notation: w a parameter, g = ∂f/∂w, η the learning rate, t the step count.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, NamedTuple

from .backend import Array, Ops, to_device, to_host
from .classnames import ClassLookupError, ClassRegistry, qualified_name
from .layers.base import Parameter

#: a learning-rate schedule: (fractional) epoch -> η
Schedule = Callable[[float], float]


class LearningRate:
    """The learning rate η of one optimizer, in one place: its value as last set (a host float,
    read without a device sync) and the 0-d device arrays a step reads (one per dtype, on one
    backend), written together by :meth:`set`: one fill each, no read.  A captured step (CUDA
    graph) reads the arrays at their fixed addresses, so a replay sees the current η."""

    def __init__(self, value: float) -> None:
        self.value = _checked_lr(value)
        self._ops: Ops | None = None
        self._cells: dict[str, Array] = {}

    def set(self, value: float) -> None:
        """η ← ``value`` (a non-negative finite number) everywhere it is kept."""
        value = _checked_lr(value)
        if value != self.value:
            self.value = value
            for cell in self._cells.values():
                self._ops.fill_(cell, value)

    def cell(self, ops: Ops, dtype: Any) -> Array:
        """η as a 0-d array of ``dtype`` on ``ops``, made on first use and then kept (its address
        is what a captured step reads)."""
        if ops is not self._ops:
            self._ops, self._cells = ops, {}
        key = str(dtype)
        cell = self._cells.get(key)
        if cell is None:
            cell = self._cells[key] = ops.full((), self.value, dtype)
        return cell


def _checked_lr(value: Any) -> float:
    try:
        lr = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"learning rate must be a number, got {value!r}") from None
    if not 0.0 <= lr < math.inf:
        raise ValueError(f"learning rate must be a non-negative finite number, got {value!r}")
    return lr


class StepScalars:
    """The per-step values of an optimizer in device memory, for a captured step (a CUDA graph
    freezes kernel arguments, so nothing that changes between steps may be a Python number):
    the step count t (float64 where the device has it), the optimizer's own η arrays
    (:meth:`LearningRate.cell`: ``lr`` in float64, ``lr_w`` in the parameters' dtype; setting
    ``optimizer.lr`` writes them) and the values a subclass derives each step (Adam: η_t, ε̂, d)."""

    def __init__(self, ops: Ops, dtype: Any, iterations: int, lr: LearningRate) -> None:
        wide = ops.float64 if ops.has_float64 else ops.float32
        self.ops = ops
        self.t = ops.full((), float(iterations), wide)
        self.lr = lr.cell(ops, wide)
        self.lr_w = lr.cell(ops, dtype)
        self.derived: dict[str, Array] = {}


# ---------------------------------------------------------------------- gradient transforms
class GradientTransform:
    """A hook of an optimizer's step, applied in the order given: :meth:`before` changes the
    gradients before the update rule, :meth:`after` the weights after it.  Both work in place
    through ``ops`` (no host reads: they run inside a captured step too)."""

    #: whether it runs inside a captured step (CUDA graph); False: the run trains eagerly
    capturable: ClassVar[bool] = True

    def before(self, params: list[Parameter], ops: Ops) -> None:
        """Change the gradients ``p.grad`` in place (nothing here)."""

    def after(self, params: list[Parameter], ops: Ops) -> None:
        """Change the weights ``p.data`` in place after the update (nothing here)."""

    def get_config(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_config().items())})"


def global_grad_norm(params: Iterable[Parameter], ops: Ops) -> Array:
    """‖g‖ over all parameters, as a 0-d device array."""
    total = None
    for p in params:
        s = ops.sum_squares(p.grad)
        total = s if total is None else total + s
    return ops.xp.sqrt(total)


class ClipNorm(GradientTransform):
    """Scale all gradients so their global norm ‖g‖ is at most ``clip_norm`` (computed on the
    device, no host sync): g ← g · min(1, c / (‖g‖ + 10⁻⁶))."""

    def __init__(self, clip_norm: float) -> None:
        if not 0.0 < float(clip_norm) < math.inf:
            raise ValueError(f"ClipNorm: clip_norm must be a positive finite number, got {clip_norm!r}")
        self.clip_norm = float(clip_norm)

    def scale(self, params: list[Parameter], ops: Ops) -> Array:
        norm = global_grad_norm(params, ops)
        return ops.xp.minimum(ops.xp.ones_like(norm), self.clip_norm / (norm + 1e-6))

    def before(self, params: list[Parameter], ops: Ops) -> None:
        scale = self.scale(params, ops)
        for p in params:
            g = p.grad
            g *= scale

    def get_config(self) -> dict[str, Any]:
        return {"clip_norm": self.clip_norm}


Exclude = Callable[[str], bool] | Iterable[str]


def excluder(exclude: Exclude | None) -> Callable[[str], bool]:
    """A test of parameter names from ``exclude``: names (``"bias"`` matches ``"0.bias"`` and
    ``"bias"``: the last part or the whole name) or a predicate of the name."""
    if exclude is None:
        return lambda name: False
    if callable(exclude):
        return exclude
    names = tuple(exclude)
    if not all(isinstance(n, str) for n in names):
        raise ValueError(f"weight decay exclude: expected parameter names or a predicate, got {exclude!r}")
    return lambda name: name in names or name.rsplit(".", 1)[-1] in names


def exclude_config(exclude: Exclude | None) -> Any:
    """How a run's settings record an exclusion: the names, or a predicate's qualified name."""
    if exclude is None:
        return None
    if not callable(exclude):
        return sorted(exclude)
    try:
        return qualified_name(exclude)
    except AttributeError:          # a callable object without a qualified name (functools.partial)
        return repr(exclude)


class WeightDecay(GradientTransform):
    """L2 weight decay coupled into the gradient, g ← g + λ w, for every parameter but those
    ``exclude`` names (e.g. ``("bias", "gamma", "beta")``) or a predicate of the name picks."""

    def __init__(self, weight_decay: float, exclude: Exclude | None = None) -> None:
        if not 0.0 <= float(weight_decay) < math.inf:
            raise ValueError(f"WeightDecay: weight_decay must be a non-negative finite number, got {weight_decay!r}")
        self.weight_decay = float(weight_decay)
        self.exclude = exclude
        self.excluded = excluder(exclude)

    def before(self, params: list[Parameter], ops: Ops) -> None:
        wd, excluded = self.weight_decay, self.excluded
        for p in params:
            if excluded(p.name):
                continue
            g = p.grad
            g += p.data * wd

    def get_config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"weight_decay": self.weight_decay}
        if self.exclude is not None:
            cfg["exclude"] = exclude_config(self.exclude)
        return cfg


class MaxNorm(GradientTransform):
    """After the update, rescale each row of every 2-D weight (the incoming weights of one
    unit) to norm at most ``max_norm``."""

    def __init__(self, max_norm: float) -> None:
        if not 0.0 < float(max_norm) < math.inf:
            raise ValueError(f"MaxNorm: max_norm must be a positive finite number, got {max_norm!r}")
        self.max_norm = float(max_norm)

    def after(self, params: list[Parameter], ops: Ops) -> None:
        for p in params:
            if p.data.ndim == 2:
                self.apply(p.data, ops)

    def apply(self, w: Array, ops: Ops) -> None:
        xp = ops.xp
        norms = xp.sqrt(xp.sum(w * w, axis=1, keepdims=True))
        w *= xp.minimum(xp.ones_like(norms), self.max_norm / (norms + 1e-7))

    def get_config(self) -> dict[str, Any]:
        return {"max_norm": self.max_norm}


# ---------------------------------------------------------------------- registration by name
#: optimizers by the name ``fit(optimizer="...")``, the CLI's ``--optimizer`` and checkpoints use
OPTIMIZERS: dict[str, type[Optimizer]] = {}


def register_optimizer(name: str) -> Callable[[type[Optimizer]], type[Optimizer]]:
    """Class decorator: make an :class:`Optimizer` subclass known by ``name`` (lower case) to
    ``get_optimizer``, ``fit(optimizer=name)``, the CLI and checkpoints (which record it, so a
    checkpoint restores the class registered under that name)."""
    key = name.lower() if isinstance(name, str) else None
    if not key:
        raise ValueError(f"register_optimizer: expected a non-empty name, got {name!r}")

    def register(cls: type[Optimizer]) -> type[Optimizer]:
        if not (isinstance(cls, type) and issubclass(cls, Optimizer)):
            raise TypeError(f"register_optimizer({name!r}): expected an Optimizer subclass, got {cls!r}")
        old = OPTIMIZERS.get(key)
        if old is not None and qualified_name(old) != qualified_name(cls):
            raise ValueError(f"register_optimizer: the name {key!r} is taken by {qualified_name(old)}; "
                             f"choose another for {qualified_name(cls)}")
        OPTIMIZERS[key] = cls
        cls.registered_name = key
        return cls
    return register


def resolve_optimizer(saved: dict[str, Any]) -> type[Optimizer]:
    """The class a checkpoint's optimizer record names: by its qualified class name (see
    :mod:`deepnet.classnames`), else by the name it was registered under.  Raises
    :class:`ClassLookupError` naming what to register."""
    try:
        return Optimizer.registry.resolve(saved.get("type"), saved.get("class"))[0]
    except ClassLookupError as err:
        name = saved.get("name")
        cls = OPTIMIZERS.get(name) if isinstance(name, str) else None
        if cls is not None:
            return cls
        raise ClassLookupError(f"{err}; or register a class under the checkpoint's name before loading: "
                               f"@deepnet.register_optimizer({(name or saved.get('type'))!r})") from None


def _fifth_parameter(method: Any) -> str | None:
    """The name of ``method``'s argument after (self, w, g, state, ops), or None."""
    try:
        names = list(inspect.signature(method).parameters)
    except (TypeError, ValueError):
        return None
    return names[5] if len(names) > 5 else None


def _adapt_scalars_signature(cls: type, name: str, method: Any) -> None:
    """An optimizer written for ``update(w, g, state, ops, scalars=None)`` (before η was passed
    in) keeps training eagerly: it is called with ``scalars=None`` and reads ``self.lr``, as it
    did; it is not captured (it would bake η into the graph).  Said once, as a warning."""
    warnings.warn(f"{cls.__name__}.{name}(..., ops, scalars): optimizers now receive the learning rate, "
                  f"write {name}(..., ops, lr) and use lr (docs/optimizers.md); this one reads self.lr and "
                  "is not captured", DeprecationWarning, stacklevel=4)

    def adapted(self: Any, a: Any, b: Any, c: Any, ops: Any, lr: Any = None) -> None:
        self._legacy_lr = lr          # for a built-in update it hands scalars=None on to
        try:
            method(self, a, b, c, ops, None)
        finally:
            self._legacy_lr = None

    adapted.__doc__ = method.__doc__
    setattr(cls, name, adapted)
    cls.capturable = False


class Optimizer:
    """Base optimizer: owns η (:attr:`lr`), the step count and the per-parameter state.

    Each step, in this order: every transform's :meth:`GradientTransform.before` (the options
    ``clip_norm`` → :class:`ClipNorm`, ``weight_decay`` → :class:`WeightDecay` (coupled; see
    :class:`AdamW` for decoupled) with ``weight_decay_exclude``, then ``transforms``), the
    update rule of the subclass (:meth:`update`, given η), then every transform's
    :meth:`GradientTransform.after` (``max_norm`` → :class:`MaxNorm`: last).

    A subclass is one class: ``slots``, ``__init__``/``get_config`` for its settings, and
    ``update(w, g, state, ops, lr)``; ``@register_optimizer("name")`` makes it known by name.
    """

    #: every optimizer class by qualified name (``module.QualName``): checkpoints name optimizers through it
    registry: ClassVar[ClassRegistry] = ClassRegistry("optimizer")
    slots: ClassVar[tuple[str, ...]] = ()
    #: η of the step while an update written for the old ``(..., ops, scalars)`` signature runs
    #: (it hands ``scalars=None`` on to a built-in update, which then takes this): None otherwise
    _legacy_lr: Any = None
    #: the name given to :func:`register_optimizer` (None: not registered)
    registered_name: ClassVar[str | None] = None
    #: declared capability: whether :meth:`step` runs inside a captured step (CUDA graph), i.e.
    #: its update reads η from its ``lr`` argument and nothing that changes per step from Python
    #: numbers.  Read from the class that defines the nearest ``step``/``update``/``update_many``,
    #: which declares it in its own body (see :meth:`can_capture`).
    capturable: ClassVar[bool] = True
    #: what the CPU's compiled step knows this update as ("sgd": SGD with or without (Nesterov)
    #: momentum, "adam": Adam and AdamW); None: the plain loop.  Honoured only when declared by
    #: the class defining the nearest ``step``/``update``/``update_many``, and without transforms
    compiled_kind: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Optimizer.registry.add(cls)
        cls.registered_name = None if "registered_name" not in cls.__dict__ else cls.registered_name
        for name in ("update", "update_many"):
            method = cls.__dict__.get(name)
            if method is not None and _fifth_parameter(method) == "scalars":
                _adapt_scalars_signature(cls, name, method)

    def __init__(self, lr: float = 0.01, weight_decay: float = 0.0, clip_norm: float | None = None,
                 max_norm: float | None = None, *, weight_decay_exclude: Exclude | None = None,
                 transforms: Iterable[GradientTransform] = ()) -> None:
        if not 0 < lr < math.inf:
            raise ValueError(f"{type(self).__name__}: learning rate must be positive and finite, got {lr!r}")
        self._lr = LearningRate(float(lr))
        self.weight_decay = float(weight_decay)
        self.weight_decay_exclude = weight_decay_exclude
        self.clip_norm = None if clip_norm is None else float(clip_norm)
        self.max_norm = None if max_norm is None else float(max_norm)
        self.extra_transforms: tuple[GradientTransform, ...] = tuple(transforms)
        for t in self.extra_transforms:
            if not isinstance(t, GradientTransform):
                raise TypeError(f"{type(self).__name__}: transforms must be GradientTransform objects, got {t!r}")
        self.iterations = 0
        self.state: dict[str, dict[str, Array]] = {}
        #: the backend the state lives on (the network binds it: :meth:`bind`)
        self.ops: Ops | None = None
        self._initial_config: dict[str, Any] | None = None
        self._transforms: tuple[tuple, tuple[GradientTransform, ...]] | None = None

    # -- the learning rate: one owner, one writer ---------------------------------
    @property
    def lr(self) -> float:
        """η as last set (a host value: reading it costs no device sync)."""
        return self._lr.value

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr.set(value)

    def apply_schedule(self, schedule: Schedule, epoch: float) -> float:
        """η ← ``schedule(epoch)`` (a fractional epoch for per-step schedules); returns it."""
        self.lr = schedule(epoch)
        return self.lr

    def scale_lr(self, factor: float, floor: float = 0.0) -> float:
        """η ← max(``floor``, η · ``factor``) (a plateau, a skipped non-finite step); returns it."""
        self.lr = max(floor, self.lr * factor)
        return self.lr

    def step_lr(self, ops: Ops, dtype: Any, scalars: StepScalars | None) -> Any:
        """What :meth:`update` receives as ``lr`` this step: the device scalar of η in the
        parameters' dtype in a captured step or on a backend with a device (no host sync);
        else η as a float."""
        if scalars is not None:
            return scalars.lr_w
        if ops.cheap_sync or dtype is None:
            return self._lr.value
        return self._lr.cell(ops, dtype)

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
        cfg: dict[str, Any] = {"lr": self.lr, "weight_decay": self.weight_decay}
        if self.clip_norm is not None:
            cfg["clip_norm"] = self.clip_norm
        if self.max_norm is not None:
            cfg["max_norm"] = self.max_norm
        if self.weight_decay_exclude is not None:
            cfg["weight_decay_exclude"] = exclude_config(self.weight_decay_exclude)
        if self.extra_transforms:
            cfg["transforms"] = [repr(t) for t in self.extra_transforms]
        return cfg

    def __repr__(self) -> str:
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in self.get_config().items())})"

    # -- gradient transforms ----------------------------------------------------------
    @property
    def transforms(self) -> tuple[GradientTransform, ...]:
        """The transforms applied each step, in order: ClipNorm, WeightDecay (coupled), the
        ``transforms`` given, MaxNorm (from the options as they are now)."""
        key = (self.clip_norm, self.coupled_weight_decay, id(self.weight_decay_exclude), self.max_norm,
               self.extra_transforms)
        if self._transforms is None or self._transforms[0] != key:
            out: list[GradientTransform] = []
            if self.clip_norm is not None:
                out.append(ClipNorm(self.clip_norm))
            if self.coupled_weight_decay:
                out.append(WeightDecay(self.coupled_weight_decay, self.weight_decay_exclude))
            out.extend(self.extra_transforms)
            if self.max_norm is not None:
                out.append(MaxNorm(self.max_norm))
            self._transforms = (key, tuple(out))
        return self._transforms[1]

    def _slots_for(self, p: Parameter, ops: Ops) -> dict[str, Array]:
        """Create the state slots of a parameter on first use: zeros with its shape, dtype and
        memory layout (``ops.zeros_like``)."""
        st = self.state[p.name] = {k: ops.zeros_like(p.data) for k in self.slots}
        return st

    def can_capture(self) -> bool:
        """Whether :meth:`step` runs inside a captured step: the class that defines the nearest
        ``step``, ``update`` or ``update_many`` declares ``capturable`` in its own body (an
        override that does not say so runs eagerly), and every transform is capturable."""
        cls = type(self)
        for klass in cls.__mro__:
            if any(m in klass.__dict__ for m in ("step", "update", "update_many", "capturable")):
                if not bool(klass.__dict__.get("capturable", False)):
                    return False
                break
        return all(t.capturable for t in self.extra_transforms)

    def device_scalars(self, ops: Ops, dtype: Any) -> StepScalars:
        """The per-step values of this optimizer on ``ops`` for a captured step, starting at its
        current step, with η read from the optimizer's own device scalars."""
        return StepScalars(ops, dtype, self.iterations, self._lr)

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
        plist = list(params.values())
        lr = self.step_lr(ops, plist[0].data.dtype if plist else None, scalars)
        transforms = self.transforms
        if not transforms and not self._decay_excluded(plist):
            # the common case: one multi-tensor update for all parameters (see update_many)
            ws, gs, states, state = [], [], [], self.state
            for p in plist:
                w, g = p.data_and_grad()
                ws.append(w)
                gs.append(g)
                st = state.get(p.name)
                states.append(self._slots_for(p, ops) if st is None else st)
            self.update_many(ws, gs, states, ops, lr)
            return
        for t in transforms:
            t.before(plist, ops)
        excluded = self._decay_excluded(plist)
        plain_lr = self.without_decay(lr) if excluded else lr
        update = self.update
        for p in plist:
            st = self.state.get(p.name)
            update(p.data, p.grad, self._slots_for(p, ops) if st is None else st, ops,
                   plain_lr if p.name in excluded else lr)
        for t in transforms:
            t.after(plist, ops)

    def decay_excluded(self, params: list[Parameter]) -> set[str]:
        """Names of the parameters decoupled weight decay (AdamW's ``weight_decay_exclude``) skips."""
        return self._decay_excluded(params)

    def _decay_excluded(self, params: list[Parameter]) -> set[str]:
        """Names of the parameters decoupled weight decay (AdamW) skips."""
        if self.weight_decay_exclude is None or not self.weight_decay or self.coupled_weight_decay:
            return set()
        excluded = excluder(self.weight_decay_exclude)
        return {p.name for p in params if excluded(p.name)}

    def without_decay(self, lr: Any) -> Any:
        """``lr`` for a parameter excluded from decoupled weight decay (see :class:`AdamW`)."""
        return lr

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

    def update(self, w: Array, g: Array, state: dict[str, Array], ops: Ops, lr: Any) -> None:
        """One parameter's update, in place, with η = ``lr`` (a float, or a 0-d device array: use
        it in arithmetic, never read it into Python)."""
        raise NotImplementedError(f"{self.name}: an optimizer implements update(w, g, state, ops, lr)")

    def update_many(self, ws: list[Array], gs: list[Array], states: list[dict[str, Array]], ops: Ops,
                    lr: Any) -> None:
        """:meth:`update` for all parameters at once.  Subclasses with a multi-tensor
        backend kernel override this (one call per step instead of one per parameter)."""
        for w, g, st in zip(ws, gs, states, strict=True):
            self.update(w, g, st, ops, lr)

    def global_grad_norm(self, params: dict[str, Parameter], ops: Ops) -> Array:
        """‖g‖ over all parameters, as a 0-d device array."""
        return global_grad_norm(params.values(), ops)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Optimizer:
        """A new optimizer of this class from a checkpoint's recorded :meth:`get_config`.  Transforms
        and an exclusion predicate are recorded by name only: such a run needs its optimizer given."""
        cfg = dict(config)
        if "transforms" in cfg or isinstance(cfg.get("weight_decay_exclude"), str):
            raise ValueError(f"{cls.__name__}: the checkpoint's optimizer had transforms or a weight-decay "
                             f"predicate ({cfg.get('transforms') or cfg.get('weight_decay_exclude')}), which a "
                             "checkpoint records by name only: give that optimizer to the network before resuming")
        return cls(**cfg)

    # -- state that moves with the model and goes into checkpoints ---------------
    def state_dict(self) -> dict[str, Any]:
        """Host copy of the optimizer: config, step count and per-parameter slots."""
        sd = {
            "type": self.name,
            "class": qualified_name(type(self)),
            "config": self.get_config(),
            "iterations": self.iterations,
            "slots": {pname: {k: to_host(v).copy() for k, v in st.items()} for pname, st in self.state.items()},
        }
        if self.registered_name is not None:
            sd["name"] = self.registered_name
        return sd

    def load_state_dict(self, sd: dict[str, Any], ops: Ops) -> None:
        for k, v in sd.get("config", {}).items():
            if k not in ("transforms", "weight_decay_exclude"):     # recorded for comparison, kept as given
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


@register_optimizer("sgd")
class SGD(Optimizer):
    """Plain gradient descent, the seed's rule: w ← w − η g.  With ``momentum`` μ > 0:
    v ← μ v + g, w ← w − η v; with ``nesterov``: w ← w − η (g + μ v)."""

    capturable = True
    compiled_kind = "sgd"

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
        if self.momentum or self.transforms or self.weight_decay:
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
        ops.sgd_update_many_(ws, gs, self.step_lr(ops, ws[0].dtype if ws else None, scalars))

    def update(self, w: Array, g: Array, state: dict[str, Array], ops: Ops, lr: Any) -> None:
        lr = self._legacy_lr if lr is None else lr
        if self.momentum:
            ops.momentum_update_(w, g, state["velocity"], lr, self.momentum, self.nesterov)
        else:
            ops.sgd_update_(w, g, lr)

    def update_many(self, ws: list[Array], gs: list[Array], states: list[dict[str, Array]], ops: Ops,
                    lr: Any) -> None:
        lr = self._legacy_lr if lr is None else lr
        if self.momentum:
            ops.momentum_update_many_(ws, gs, [st["velocity"] for st in states], lr, self.momentum,
                                      self.nesterov)
        else:
            ops.sgd_update_many_(ws, gs, lr)


@register_optimizer("momentum")
class Momentum(SGD):
    """SGD with (Nesterov) momentum, μ = 0.9 by default."""

    def __init__(self, lr: float = 0.01, momentum: float = 0.9, nesterov: bool = False, **kw: Any) -> None:
        super().__init__(lr, momentum=momentum, nesterov=nesterov, **kw)


def _check_eps(name: str, eps: float) -> None:
    """Refuse an ε that is negative, NaN or infinite (the update divides by √v + ε)."""
    if not 0.0 <= eps < math.inf:
        raise ValueError(f"{name}: eps must be a non-negative finite number, got {eps!r}")


class AdamStep(NamedTuple):
    """What Adam's update receives as its learning rate: η_t, ε̂ and d of this step (floats, or
    0-d device arrays in a captured step); see :meth:`Adam.step_scalars`."""

    lr_t: Any
    eps_hat: Any
    decay: Any


@register_optimizer("adam")
class Adam(Optimizer):
    """Adam: m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g², w ← w − η m̂/(√v̂ + ε)
    with m̂ = m/(1−β₁ᵗ), v̂ = v/(1−β₂ᵗ)."""

    slots = ("m", "v")
    decoupled = False          #: AdamW: weight decay applied to w directly, not added to g
    capturable = True
    compiled_kind = "adam"

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

    def step_lr(self, ops: Ops, dtype: Any, scalars: StepScalars | None) -> AdamStep:
        """η_t, ε̂ and d of this step: computed on the host from η and t (no device read), or the
        device values :meth:`advance` wrote in a captured step."""
        if scalars is None:
            return AdamStep(*self.step_scalars())
        d = scalars.derived
        return AdamStep(d["lr_t"], d["eps_hat"], d.get("decay", 1.0))

    def without_decay(self, lr: AdamStep) -> AdamStep:
        return lr._replace(decay=1.0)

    def update(self, w: Array, g: Array, state: dict[str, Array], ops: Ops, lr: AdamStep) -> None:
        lr = self._legacy_lr if lr is None else lr
        ops.adam_update_(w, g, state["m"], state["v"], lr.lr_t, self.beta1, self.beta2, lr.eps_hat,
                         lr.decay)

    def update_many(self, ws: list[Array], gs: list[Array], states: list[dict[str, Array]], ops: Ops,
                    lr: AdamStep) -> None:
        lr = self._legacy_lr if lr is None else lr
        ops.adam_update_many_(ws, gs, [st["m"] for st in states], [st["v"] for st in states], lr.lr_t,
                              self.beta1, self.beta2, lr.eps_hat, lr.decay)

    @property
    def coupled_weight_decay(self) -> float:
        return 0.0 if self.decoupled else self.weight_decay


@register_optimizer("adamw")
class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): w ← w − η λ w − η m̂/(√v̂ + ε);
    ``weight_decay_exclude`` names the parameters it skips (e.g. biases, BatchNorm's γ and β)."""

    decoupled = True

    def __init__(self, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 weight_decay: float = 0.01, **kw: Any) -> None:
        super().__init__(lr, beta1, beta2, eps, weight_decay=weight_decay, **kw)


@register_optimizer("rmsprop")
class RMSProp(Optimizer):
    """RMSProp: s ← ρ s + (1−ρ) g², w ← w − η g/(√s + ε)."""

    slots = ("s",)
    capturable = True

    def __init__(self, lr: float = 1e-3, rho: float = 0.9, eps: float = 1e-8, **kw: Any) -> None:
        super().__init__(lr, **kw)
        if not 0.0 <= rho < 1.0:
            raise ValueError(f"{self.name}: rho must be in [0, 1), got {rho!r}")
        _check_eps(self.name, eps)
        self.rho, self.eps = float(rho), float(eps)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rho": self.rho, "eps": self.eps}

    def update(self, w: Array, g: Array, state: dict[str, Array], ops: Ops, lr: Any) -> None:
        lr = self._legacy_lr if lr is None else lr
        ops.rmsprop_update_(w, g, state["s"], lr, self.rho, self.eps)


def get_optimizer(spec: str | Optimizer, **kwargs: Any) -> Optimizer:
    """An optimizer given as an instance (returned as it is) or by registered name."""
    if isinstance(spec, Optimizer):
        return spec
    cls = OPTIMIZERS.get(spec.lower()) if isinstance(spec, str) else None
    if cls is None:
        raise ValueError(f"unknown optimizer {spec!r}: expected one of {sorted(OPTIMIZERS)} "
                         "(or an Optimizer; @deepnet.register_optimizer('name') adds a class by name)")
    return cls(**kwargs)
