"""The layer contract, checked: every layer (built-in or yours) goes through one harness.

:func:`check_layer_contract` builds fresh copies of a layer and checks everything the
rest of deepnet relies on (Chainer's per-layer checker is the model)::

    from deepnet.testing import check_layer_contract
    print(check_layer_contract(lambda: MyLayer(4, 3), x))   # raises LayerContractError

Checks, by name (each failure is one line of the error):

* ``forward``: output shape ``(n, output_width(n_in))``, float32 in → float32 out and
  float64 → float64 (output, input gradient, every parameter gradient), all finite.
* ``gradient``: float64 finite-difference check of the input and every parameter
  (:func:`~deepnet.gradcheck.check_layer`, training mode, randomness frozen).
* ``accumulation``: for every parameter, two backward passes without ``zero_grad``
  give 2× the gradient of one; ``zero_grad`` resets it; ``need_input_grad=False``
  returns None and still adds the parameter gradients.
* ``evaluation``: backward before any forward, or after an evaluation forward, raises
  RuntimeError (evaluation keeps nothing); evaluation forward is deterministic.
* ``batch1``: a batch of one sample works (shape, finite), in evaluation equals that
  sample's row of the full batch, and passes the gradient check in training.
* ``non_contiguous``: strided and transposed views give the contiguous input's output,
  input gradient and parameter gradients.
* ``round_trip``: saved and loaded through a model file, the layer has the same config,
  settings, parameters, state arrays (e.g. BatchNorm running statistics) and output.
* ``input_unchanged``: forward (training and evaluation) and backward leave x as it was.

Integer inputs (token or category indices, for an embedding) are given as an integer ``x``:
every check then passes them as they are, in their dtype, calls backward with
``need_input_grad=False`` and checks no input gradient (indices have none; the report says
so).  ``make_inputs(rng, shape)`` gives the further inputs the round trip trains on (default:
``x * scale + 0.5`` for float inputs, a shuffle of x's rows for integer ones).
"""

from __future__ import annotations

import copy
import inspect
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as _host  # host-side comparisons only: a test utility, not a layer

from .backend import Ops, get_backend, get_ops, host_rng, to_device, to_host, use_backend
from .gradcheck import GradCheckError, GradCheckReport, check_layer
from .io import load_model, save_model
from .errors import ShapeError
from .layers.base import Layer
from .layers.conv import Flatten, Reshape
from .layers.dense import Dense
from .network import Network

CHECKS = ("forward", "gradient", "accumulation", "evaluation", "batch1", "non_contiguous", "round_trip",
          "input_unchanged")


class LayerContractError(AssertionError):
    """A layer fails the contract; :attr:`failures` maps each failed check to a one-line reason."""

    def __init__(self, layer: str, backend: str, failures: dict[str, str]) -> None:
        self.layer, self.backend, self.failures = layer, backend, dict(failures)
        lines = [f"{check}: {reason}" for check, reason in failures.items()]
        super().__init__(f"{layer} on {backend} fails {len(failures)} of the layer contract's checks "
                         f"({', '.join(failures)}):\n  " + "\n  ".join(lines))


@dataclass
class ContractReport:
    """What passed, with notes on what did not apply (e.g. no parameters)."""

    layer: str
    backend: str
    passed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    gradients: GradCheckReport | None = None

    def __str__(self) -> str:
        lines = [f"layer contract of {self.layer} on {self.backend}: passed ({', '.join(self.passed)})"]
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])


class _Fail(Exception):
    """One check's failure reason (internal)."""


class _Skipped(Exception):
    """Why a check could not run (internal)."""


def check_layer_contract(make_layer: Callable[[], Layer] | Layer, x: Any, *, backend: str | Ops | None = None,
                         rtol: float = 1e-5, atol: float = 1e-8, eps: float = 1e-6,
                         max_checks: int | None = 50, seed: int = 0, skip: Iterable[str] = (),
                         make_inputs: Callable[[Any, tuple[int, ...]], Any] | None = None) -> ContractReport:
    """Run every check of the layer contract on ``backend`` (default: the current one).

    ``make_layer`` returns a new layer on each call (or pass a layer: it is deep-copied);
    ``x`` is a host batch with n ≥ 2 samples, kept away from kinks: rows (n, n_in), or
    NCHW images (n, C, H, W) for a layer that takes them (per-sample shapes follow
    ``Layer.output_shape``).  A float ``x`` is checked in float32 and float64; an integer
    ``x`` (indices, e.g. for an embedding) is passed as it is, and no check asks for or
    checks a gradient with respect to it (backward gets ``need_input_grad=False``).
    ``make_inputs(rng, shape)``: a function returning a new valid host batch of ``shape``
    (x's shape, drawn with the NumPy Generator ``rng``), for the checks that need inputs other
    than x, its rows or views of it (the round trip's training passes, which update state
    such as running statistics); default ``x * scale + 0.5`` for float x, x's rows shuffled
    for integer x.  ``rtol``,
    ``atol``, ``eps``, ``max_checks`` go to the gradient checks; ``skip`` names checks
    (see :data:`CHECKS`) to leave out.  Returns a :class:`ContractReport`; raises
    :class:`LayerContractError` listing every failed check.
    """
    skip = set(skip)
    unknown = sorted(skip - set(CHECKS))
    if unknown:
        raise ValueError(f"check_layer_contract: unknown checks {unknown} in skip, expected names from {list(CHECKS)}")
    if isinstance(make_layer, Layer):
        template = make_layer
        make_layer = lambda: copy.deepcopy(template)  # noqa: E731
    elif not callable(make_layer):
        raise TypeError(f"check_layer_contract: make_layer must be a layer or a function returning one, "
                        f"got {type(make_layer).__name__}")
    if make_inputs is not None and not callable(make_inputs):
        raise TypeError(f"check_layer_contract: make_inputs must be a function (rng, shape) -> array, "
                        f"got {type(make_inputs).__name__}")
    ops = get_backend() if backend is None else get_ops(backend)
    xh = _host_inputs(x)
    if xh.ndim < 2 or xh.shape[0] < 2 or not _host.isfinite(xh).all():
        raise ValueError(f"check_layer_contract: x must be a finite batch (n, ...) of at least 2 samples, "
                         f"got shape {xh.shape}" + ("" if _host.isfinite(xh).all() else " with NaN or inf"))
    with use_backend(ops):
        run = _Run(make_layer, xh, ops, seed, dict(rtol=rtol, atol=atol, eps=eps, max_checks=max_checks),
                   make_inputs)
        first, second = run.build("float32"), run.factory()
        if first is second:
            raise TypeError("check_layer_contract: make_layer returned the same layer twice; "
                            "it must build a new one on each call (e.g. lambda: MyLayer(4, 3))")
        n_in = first.n_in
        try:
            first.output_shape(tuple(xh.shape[1:]))
        except (ShapeError, ValueError) as err:
            what = (f"{first.name} expects inputs of width {n_in}" if n_in is not None and xh.ndim == 2
                    else " ".join(str(err).split()))
            raise ValueError(f"check_layer_contract: {what}, got x of shape {xh.shape}") from None
        try:
            label = repr(first)
        except Exception:  # noqa: BLE001  (a broken get_config is reported by round_trip)
            label = first.name
        report = ContractReport(label, ops.name)
        failures: dict[str, str] = {}
        for name in CHECKS:
            if name in skip:
                report.notes.append(f"{name}: skipped as asked")
                continue
            if name == "input_unchanged":          # recorded by the forward check
                if run.input_problem:
                    failures[name] = run.input_problem
                elif "forward" in report.passed:
                    report.passed.append(name)
                else:
                    report.notes.append(f"{name}: not run: the forward check did not complete")
                continue
            try:
                run.checks()[name](report, failures)
            except _Fail as err:
                failures[name] = str(err)
            except _Skipped as err:
                report.notes.append(f"{name}: not run: {err}")
            except Exception as err:  # noqa: BLE001  (layer code: any error fails this check)
                failures[name] = _one_line(err)
            else:
                report.passed.append(name)
    if failures:
        raise LayerContractError(label, ops.name, failures)
    return report


class _Run:
    """The checks, sharing the factory, the input and one backend."""

    def __init__(self, factory: Callable[[], Layer], x: Any, ops: Ops, seed: int, grad_opts: dict[str, Any],
                 make_inputs: Callable[[Any, tuple[int, ...]], Any] | None = None) -> None:
        self.factory, self.x, self.ops, self.seed, self.grad_opts = factory, x, ops, seed, grad_opts
        self.make_inputs = make_inputs
        #: integer inputs (indices): passed as they are, never differentiated
        self.integer = x.dtype.kind in "iub"
        self.n, self.shape = x.shape[0], tuple(x.shape[1:])
        self.width = self.shape[0] if len(self.shape) == 1 else int(_host.prod(self.shape))
        self.input_problem = ""
        self.rng = host_rng(seed + 2)

    def checks(self) -> dict[str, Callable[[ContractReport, dict[str, str]], None]]:
        """Each check of :data:`CHECKS` that runs on its own, by name (``input_unchanged`` is
        recorded by ``forward``)."""
        return {"forward": self.check_forward, "gradient": self.check_gradient,
                "accumulation": self.check_accumulation, "evaluation": self.check_evaluation,
                "batch1": self.check_batch1, "non_contiguous": self.check_non_contiguous,
                "round_trip": self.check_round_trip}

    # ---------------------------------------------------------------- helpers
    def build(self, dtype: str) -> Layer:
        layer = self.factory()
        if not isinstance(layer, Layer):
            raise TypeError(f"check_layer_contract: make_layer must return a deepnet Layer, "
                            f"got {type(layer).__name__}")
        layer.to(self.ops, dtype)
        if not layer.initialized:
            layer.initialize(host_rng(self.seed + 1))
        return layer

    def dev(self, a: Any, dtype: str = "float64") -> Any:
        return to_device(_host.array(a, dtype=dtype), self.ops)   # always a fresh array

    def inp(self, a: Any, dtype: str = "float64") -> Any:
        """An input batch on the device: in ``dtype``, or as it is when the inputs are integers."""
        return to_device(_host.array(a), self.ops) if self.integer else self.dev(a, dtype)

    def other_inputs(self, scale: float) -> Any:
        """A valid input batch other than x, of x's shape (``make_inputs``, or the default)."""
        if self.make_inputs is None:
            return self.x[self.rng.permutation(self.n)] if self.integer else self.x * scale + 0.5
        got = _host_inputs(self.make_inputs(self.rng, tuple(self.x.shape)))
        if got.shape != self.x.shape or (got.dtype.kind in "iub") != self.integer:
            raise _Fail(f"make_inputs(rng, {tuple(self.x.shape)}) returned a {got.dtype} array of shape {got.shape}, "
                        f"expected {'integer' if self.integer else 'float'} inputs of shape {tuple(self.x.shape)} like x")
        return got

    def out_shape(self, layer: Layer, n: int | None = None) -> tuple[int, ...]:
        return (self.n if n is None else n, *layer.output_shape(self.shape))

    def gradcheck(self, layer: Layer, x: Any) -> GradCheckReport:
        try:
            return check_layer(layer, x, training=True, seed=self.seed, **self.grad_opts)
        except GradCheckError as err:
            lines = str(err).splitlines()[1:]
            more = f" (and {len(lines) - 2} more)" if len(lines) > 2 else ""
            raise _Fail("; ".join(s.strip() for s in lines[:2]) + more
                        + " (analytic from backward, numerical from finite differences: they must agree)") from None

    # ---------------------------------------------------------------- checks
    def check_forward(self, report: ContractReport, failures: dict[str, str]) -> None:
        problems: list[str] = []
        for dtype in ("float32", "float64"):
            layer = self.build(dtype)
            want = self.out_shape(layer)
            for training in (False, True):
                x = self.inp(self.x, dtype)
                y = layer.forward(x, training)
                problems += self.array_problems(f"{dtype} forward(training={training})", y, want, dtype)
                self.note_input(x, dtype, f"forward(x, training={training})")
            dx = layer.backward(self.dev(self.rng.standard_normal(want), dtype), not self.integer)
            self.note_input(x, dtype, "backward after forward(x, training=True)")
            if not self.integer:               # indices have no gradient: none is asked for
                problems += self.array_problems(f"{dtype} backward's input gradient", dx, (self.n, *self.shape), dtype)
            for name, p in layer.parameters().items():
                problems += self.array_problems(f"{dtype} gradient of {name}", p.grad, p.shape, dtype)
        if problems:
            raise _Fail("; ".join(problems[:3]) + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""))

    def check_gradient(self, report: ContractReport, failures: dict[str, str]) -> None:
        if self.input_problem:                   # finite differences would perturb a moving x
            raise _Skipped("forward changes its input (see input_unchanged)")
        report.gradients = self.gradcheck(self.build("float64"), self.x)
        if self.integer:
            report.notes.append(f"gradient: input not checked: {self.x.dtype} inputs are indices, which have no gradient")

    def check_accumulation(self, report: ContractReport, failures: dict[str, str]) -> None:
        layer = self.build("float64")
        _freeze(layer)
        params = layer.parameters()
        dy = self.rng.standard_normal(self.out_shape(layer))

        def step(need_input_grad: bool = True) -> Any:
            layer.forward(self.inp(self.x), True)         # a fresh x each time: checks stay independent
            return layer.backward(self.dev(dy), need_input_grad and not self.integer)

        def grads() -> dict[str, Any]:
            return {k: to_host(p.grad).astype(_host.float64) for k, p in params.items()}

        layer.zero_grad()
        step()
        once = grads()
        step()
        twice = grads()
        layer.zero_grad()
        out = step(False)                     # straight after zero_grad: the lazily zeroed buffers
        again = grads()
        layer.zero_grad()
        zeroed = grads()
        problems = [] if out is None else [f"backward(δ, need_input_grad=False) returned a {type(out).__name__}, "
                                           f"expected None"]
        for k in params:
            g, scale = once[k], float(_host.abs(once[k]).max(initial=0.0))
            tol = dict(rtol=1e-7, atol=1e-12 * max(scale, 1.0))
            if not _host.allclose(twice[k], 2 * g, **tol):
                problems.append(f"{k}: two backward passes without zero_grad give {_factor(twice[k], g)} the gradient "
                                f"of one, expected 2× (use param.grad += ...)")
            if not _host.allclose(again[k], g, **tol):
                problems.append(f"{k}: after zero_grad, backward with need_input_grad=False gives "
                                f"{_factor(again[k], g)} the gradient, expected 1× (parameter gradients do not "
                                f"depend on need_input_grad)")
            if _host.any(zeroed[k] != 0):
                problems.append(f"{k}: after zero_grad the gradient reads max |g| = {_host.abs(zeroed[k]).max():.3g}, "
                                f"expected 0")
        if not params:
            report.notes.append("accumulation: no parameters (only need_input_grad=False was checked)")
        if problems:
            raise _Fail("; ".join(problems))

    def check_evaluation(self, report: ContractReport, failures: dict[str, str]) -> None:
        layer = self.build("float64")
        dy = self.rng.standard_normal(self.out_shape(layer))
        problems = [p for p in [self.backward_refused(layer, dy, "before any forward pass")] if p]
        layer.forward(self.inp(self.x), True)
        y1 = to_host(layer.forward(self.inp(self.x), False))
        y2 = to_host(layer.forward(self.inp(self.x), False))
        p = self.backward_refused(layer, dy, "after forward(x, training=False)")
        if p:
            problems.append(p + " (evaluation must keep nothing for backward: self._cache = None)")
        if y1.shape != y2.shape or not _host.allclose(y1, y2, rtol=1e-12, atol=0.0):
            problems.append(f"two evaluation forwards of the same x differ by {_maxdiff(y1, y2)}, expected "
                            f"identical outputs (evaluation is deterministic and changes no state)")
        if problems:
            raise _Fail("; ".join(problems))

    def check_batch1(self, report: ContractReport, failures: dict[str, str]) -> None:
        layer = self.build("float64")
        full = to_host(layer.forward(self.inp(self.x), False))
        y = layer.forward(self.inp(self.x[:1]), False)
        problems = self.array_problems("evaluation forward of a batch of 1", y, self.out_shape(layer, 1), "float64")
        if problems:
            raise _Fail("; ".join(problems))
        y = to_host(y)
        if not _host.allclose(y, full[:1], rtol=1e-9, atol=1e-12 * max(1.0, float(_host.abs(full).max()))):
            raise _Fail(f"evaluation output for sample 0 alone differs from its row in a batch of {self.n} by "
                        f"{_maxdiff(y, full[:1])}, expected equal (evaluation treats samples independently)")
        if "gradient" not in report.passed:
            report.notes.append("batch1: gradient check at batch 1 not run (the full-batch one did not pass)")
            return
        probe = self.build("float64")
        try:
            probe.forward(self.inp(self.x[:1]), True)
        except ValueError as err:              # e.g. BatchNorm: batch statistics need 2 samples
            report.notes.append(f"batch1: training at batch 1 refused ({_one_line(err)})")
            return
        self.gradcheck(self.build("float64"), self.x[:1])

    def check_non_contiguous(self, report: ContractReport, failures: dict[str, str]) -> None:
        layer = self.build("float32")
        _freeze(layer)
        wide = _host.zeros((self.n, *self.shape[:-1], 2 * self.shape[-1]), self.x.dtype)
        wide[..., ::2] = self.x
        mt = self.ops.xp.matrix_transpose
        views = {"a strided view x[..., ::2]": lambda: self.inp(wide, "float32")[..., ::2],
                 "a transposed view of the last two axes":
                     lambda: mt(self.inp(_host.swapaxes(self.x, -1, -2), "float32")),
                 "a contiguous copy": lambda: self.inp(self.x, "float32")}
        contiguous = views.pop("a contiguous copy")
        problems: list[str] = []
        ref = to_host(layer.forward(contiguous(), False))
        for what, view in views.items():
            problems += _differ(f"evaluation output for {what}", to_host(layer.forward(view(), False)), ref)
        dy = self.rng.standard_normal(self.out_shape(layer))

        def train(xv: Any) -> dict[str, Any]:
            layer.zero_grad()
            out = {"training output": to_host(layer.forward(xv, True))}
            dx = layer.backward(self.dev(dy, "float32"), not self.integer)
            if not self.integer:
                out["input gradient"] = to_host(dx)
            out.update({f"gradient of {k}": to_host(p.grad) for k, p in layer.parameters().items()})
            return out

        base = train(contiguous())
        for what, view in views.items():
            got = train(view())
            for k in base:
                problems += _differ(f"{k} for {what}", got[k], base[k])
        if problems:
            raise _Fail("; ".join(problems[:3]) + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")
                        + " (compared with a contiguous copy)")

    def check_round_trip(self, report: ContractReport, failures: dict[str, str]) -> None:
        layer = self.build("float32")
        for p in layer.parameters().values():   # move away from the initial values: they must come from the file
            w = to_host(p.data).astype(_host.float64)
            p.data = to_device(w + 0.1 * self.rng.standard_normal(w.shape), self.ops, dtype="float32")
        for scale in (1.0, 2.0):                 # training updates state (e.g. running statistics)
            layer.forward(self.inp(self.other_inputs(scale), "float32"), True)
        ref = to_host(layer.forward(self.inp(self.x, "float32"), False))
        out = layer.output_shape(self.shape)
        if len(self.shape) == 1:           # rows: a Dense in front gives the network its width if the layer does not
            before = ([] if layer.input_shape() is not None
                      else [Reshape(list(self.shape))] if self.integer else [Dense(self.width, self.width)])
        else:                              # images: a network takes and gives rows
            before = [Reshape(list(self.shape))]
        after = [] if len(out) == 1 else [Flatten()]
        net = Network([*before, layer, *after], seed=self.seed)
        with tempfile.TemporaryDirectory(prefix="deepnet-contract-") as tmp:
            loaded = load_model(save_model(net, Path(tmp) / "layer.npz")).layers[len(before)]
        problems: list[str] = []
        if type(loaded) is not type(layer):
            a, b = type(loaded), type(layer)
            raise _Fail(f"the model file rebuilt {a.__module__}.{a.__qualname__}, expected {b.__module__}."
                        f"{b.__qualname__} (layer classes are found by name: give each a name no other uses)")
        problems += _settings_lost(layer, loaded)
        want = {k: to_host(p.data) for k, p in layer.parameters().items()}
        got = {k: to_host(p.data) for k, p in loaded.parameters().items()}
        if list(got) != list(want):
            problems.append(f"parameters {list(got)} after loading, expected {list(want)}")
        problems += [f"parameter {k} differs after loading by {_maxdiff(got[k], want[k])}"
                     for k in want if k in got and not _host.array_equal(got[k], want[k])]
        a, b = layer.state_arrays(), loaded.state_arrays()
        if a:
            problems += [f"state {k} differs after loading by {_maxdiff(b.get(k), a[k])}, expected equal"
                         for k in a if not _host.array_equal(b.get(k), a[k])]
        y = to_host(loaded.forward(self.inp(self.x, "float32"), False))
        problems += _differ("evaluation output after save_model/load_model", y, ref)
        if problems:
            raise _Fail("; ".join(problems) + " (does get_config() return every constructor argument?)")

    # ---------------------------------------------------------------- small checks
    def array_problems(self, what: str, a: Any, shape: tuple[int, ...], dtype: str) -> list[str]:
        if not self.ops.owns(a):
            return [f"{what} is a {type(a).__name__}, expected an array of backend {self.ops.name}"]
        out = []
        if tuple(a.shape) != tuple(shape):
            out.append(f"{what} has shape {tuple(a.shape)}, expected {tuple(shape)}")
        if self.ops.dtype_name(a.dtype) != dtype:
            out.append(f"{what} has dtype {self.ops.dtype_name(a.dtype)}, expected {dtype}")
        elif not _host.isfinite(to_host(a)).all():
            out.append(f"{what} contains NaN or inf, expected finite values")
        return out

    def note_input(self, x: Any, dtype: str, what: str) -> None:
        if self.input_problem:
            return
        now, before = to_host(x), (self.x if self.integer else self.x.astype(dtype))
        if now.shape != before.shape or not _host.array_equal(now, before):
            changed = int((now != before).sum()) if now.shape == before.shape else now.size
            self.input_problem = (f"{what} changed {changed} of {before.size} entries of its {dtype} input, "
                                  f"expected none (forward must not write into x, nor backward into what it kept)")

    def backward_refused(self, layer: Layer, dy: Any, when: str) -> str:
        try:
            layer.backward(self.dev(dy), not self.integer)
        except RuntimeError:
            return ""
        except Exception as err:  # noqa: BLE001
            return f"backward {when} raised {type(err).__name__}, expected RuntimeError ({_one_line(err)})"
        return f"backward {when} returned, expected RuntimeError"


def _host_inputs(x: Any) -> Any:
    """A host copy of an input batch: float64, or integers kept as they are (indices)."""
    h = _host.array(to_host(x))
    return h if h.dtype.kind in "iub" else h.astype(_host.float64)


def _freeze(layer: Layer) -> None:
    if layer.stochastic:
        layer.freeze_randomness(True)


def _one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())}"


def _maxdiff(a: Any, b: Any) -> str:
    if a is None or b is None or _host.shape(a) != _host.shape(b):
        return f"shape {_host.shape(a) if a is not None else None} vs {_host.shape(b) if b is not None else None}"
    return f"max {float(_host.abs(_host.asarray(a, dtype=_host.float64) - b).max(initial=0.0)):.3g}"


def _differ(what: str, got: Any, want: Any, rtol: float = 1e-5) -> list[str]:
    atol = 1e-6 * max(1.0, float(_host.abs(want).max(initial=0.0)))
    if got.shape == want.shape and _host.allclose(got, want, rtol=rtol, atol=atol):
        return []
    return [f"{what} differs by {_maxdiff(got, want)}, expected equal"]


def _factor(g: Any, base: Any) -> str:
    """g as a multiple of base (least squares), e.g. '1×' or '0.667×'."""
    denom = float((base * base).sum())
    return f"{float((g * base).sum()) / denom:.3g}×" if denom > 0 else "∞×"


def _settings_lost(layer: Layer, loaded: Layer) -> list[str]:
    """Constructor arguments kept as same-named plain attributes that the file did not restore."""
    out = []
    try:
        names = [p.name for p in inspect.signature(type(layer)).parameters.values()
                 if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    except (TypeError, ValueError):
        return out
    for name in names:
        a, b = getattr(layer, name, None), getattr(loaded, name, None)
        if isinstance(a, (bool, int, float, str, list, tuple, type(None))) and a != b:
            out.append(f"setting {name}={b!r} after loading, expected {a!r}")
    return out
