"""A CuPy-shaped backend for machines without a GPU: CuPy's real call signatures, NumPy's
arithmetic, and a count of every host synchronisation.

CuPy installs and imports on a machine without a GPU; only calls that touch the device
fail.  This module builds a namespace that looks like ``cupy`` to the CuPy backend's
classes (``CupyOps``, and ``FusedCupyOps`` with the fused kernels):

* every ``xp.<function>(...)`` is first bound to the signature of the real
  ``cupy.<function>`` (``inspect.signature``), so an argument CuPy does not take (the
  Array API's ``device=`` in ``zeros``, say) raises the ``TypeError`` CuPy would raise;
  ufuncs have no signature and accept only ``out``, ``dtype`` and ``casting``; a function
  CuPy lacks is an ``AttributeError``;
* arrays are :class:`DeviceArray` objects that behave like ``cupy.ndarray``: arithmetic
  with a NumPy array is refused, ``numpy.asarray(a)`` is refused, and each read back to
  the host (``float``, ``int``, ``bool``, ``.item()``, ``.get()``, ``.tolist()``,
  ``asnumpy``, printing) is counted in :data:`HostSyncs` (``xp.host_syncs``), as are
  uploads from the host;
* ``ElementwiseKernel`` parses the kernel's C source and evaluates it with NumPy, so the
  fused kernels' maths runs (and is tested) without a GPU;
* streams capture as CUDA graphs do, refusing what CUDA and CuPy refuse while the current
  stream captures: cuBLAS through CuPy (``matmul``, ``dot``, ``@``...) and cuRAND raise
  ``NotImplementedError``, host reads and uploads raise ``RuntimeError``
  (cudaErrorStreamCaptureUnsupported).  Graphs cannot be replayed here.  Products under
  capture go through deepnet's own cuBLAS handle, which on this backend calls
  :class:`~deepnet.backend.cublas_shaped.FakeCublasLib` (cuBLAS emulated from raw addresses:
  ``DeviceArray.data.ptr`` is the address of the NumPy buffer).

Use it as ``--backend cupy-shaped`` or ``get_ops("cupy-shaped")`` (a
:class:`FusedCupyShapedOps`; :class:`CupyShapedOps` is the generic CuPy code without the
fused kernels); it needs the ``cupy`` package (any CUDA flavour) to read the signatures,
no GPU.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import operator
import re
import threading
import types
from collections import Counter
from typing import Any

import numpy as np

from ..errors import BackendError
from .cublas_shaped import FakeCublasLib
from .cupy_ops import CupyOps, FusedCupyOps
from .counter_rng import CounterRNG
from .cupy_products import CupyProducts
from .graphs import CheckedGraphs
from .ops import DeviceRNG

_UFUNC_KWARGS = frozenset({"out", "dtype", "casting"})
#: the functions through which CuPy calls cuBLAS (refused while a stream captures)
_CUBLAS_FUNCTIONS = frozenset({"matmul", "dot", "vdot", "inner", "outer", "tensordot", "einsum"})
CUBLAS_CAPTURE_ERROR = "calling cuBLAS API during stream capture is currently unsupported"
CURAND_CAPTURE_ERROR = "calling cuRAND API during stream capture is currently unsupported"


class HostSyncs:
    """Counts of host round trips (``kind -> n``) and uploads since the last :meth:`reset`."""

    def __init__(self) -> None:
        self.by_kind: Counter[str] = Counter()
        self.uploads = 0

    @property
    def count(self) -> int:
        """Reads of device values by the host (each would wait for the GPU)."""
        return sum(self.by_kind.values())

    def reset(self) -> None:
        self.by_kind.clear()
        self.uploads = 0

    def read(self, kind: str) -> None:
        self.by_kind[kind] += 1

    def __repr__(self) -> str:
        return f"HostSyncs(count={self.count}, uploads={self.uploads}, by_kind={dict(self.by_kind)})"


def _unwrap(x: Any) -> Any:
    if isinstance(x, DeviceArray):
        return x._a
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v) for v in x)
    if isinstance(x, dict):
        return {k: _unwrap(v) for k, v in x.items()}
    return x


def _wrap(x: Any, ns: CupyShaped) -> Any:
    if isinstance(x, np.ndarray):
        return DeviceArray(x, ns)
    if isinstance(x, np.generic):              # CuPy's reductions return 0-d device arrays
        return DeviceArray(np.asarray(x), ns)
    if isinstance(x, tuple):
        return tuple(_wrap(v, ns) for v in x)
    if isinstance(x, list):
        return [_wrap(v, ns) for v in x]
    return x


def _operand(x: Any, what: str) -> Any:
    """An operand of device arithmetic: device arrays and scalars, never host arrays."""
    if isinstance(x, DeviceArray):
        return x._a
    if isinstance(x, np.ndarray):
        raise TypeError(f"Unsupported type {type(x)} in {what}: CuPy does not mix device arrays with "
                        "NumPy arrays (move it with deepnet.to_device)")
    return x


class DeviceArray:
    """An array that behaves like ``cupy.ndarray`` (computed with NumPy on the host)."""

    __slots__ = ("_a", "_ns")
    __array_priority__ = 100

    def __init__(self, a: np.ndarray, ns: CupyShaped) -> None:
        self._a = a
        self._ns = ns

    # -- attributes ---------------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: DeviceArray(self._a.T, self._ns))
    mT = property(lambda self: DeviceArray(np.swapaxes(self._a, -1, -2), self._ns))
    device = property(lambda self: self._ns.cuda.Device())
    #: like CuPy's MemoryPointer: ``.ptr`` is the address of the first element (the NumPy buffer's)
    data = property(lambda self: _MemoryPointer(self._a.ctypes.data, self._a))

    def __len__(self) -> int:
        return len(self._a)

    def __copy__(self) -> DeviceArray:
        return DeviceArray(self._a.copy(), self._ns)

    def __deepcopy__(self, memo: dict) -> DeviceArray:
        return DeviceArray(self._a.copy(), self._ns)

    def __iter__(self) -> Any:
        for row in self._a:
            yield _wrap(row, self._ns)

    # -- host round trips: counted ---------------------------------------------------
    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct "
                        "a NumPy array explicitly.")

    def get(self, stream: Any = None, order: str = "C", out: Any = None, blocking: bool = True) -> np.ndarray:
        self._ns._host_read("get")
        if out is None:
            return np.array(self._a, order=order, copy=True)
        if not isinstance(out, np.ndarray):     # CuPy's checks on ``out``
            raise TypeError("Only numpy.ndarray can be obtained from cupy.ndarray")
        if out.dtype != self._a.dtype:
            raise TypeError(f"{out.dtype} array cannot be obtained from {self._a.dtype} array")
        if out.shape != self._a.shape:
            raise ValueError(f"Shape mismatch. Expected shape: {self._a.shape}, actual shape: {out.shape}")
        if not (out.flags.c_contiguous or out.flags.f_contiguous):
            raise RuntimeError("Non-contiguous array is not supported")
        out[...] = self._a
        return out

    def item(self) -> Any:
        self._ns._host_read("item")
        return self._a.item()

    def tolist(self) -> Any:
        self._ns._host_read("tolist")
        return self._a.tolist()

    def __float__(self) -> float:
        self._ns._host_read("float")
        return float(self._a)

    def __int__(self) -> int:
        self._ns._host_read("int")
        return int(self._a)

    def __index__(self) -> int:
        self._ns._host_read("index")
        return operator.index(self._a)

    def __bool__(self) -> bool:
        self._ns._host_read("bool")
        return bool(self._a)

    def __repr__(self) -> str:
        self._ns._host_read("repr")
        return repr(self._a).replace("array(", "DeviceArray(", 1)

    __str__ = __repr__

    def set(self, arr: np.ndarray, stream: Any = None) -> None:
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"Only numpy.ndarray can be set to cupy.ndarray, got {type(arr)}")
        if arr.shape != self._a.shape or arr.dtype != self._a.dtype:
            raise ValueError(f"Shape or dtype mismatch: {arr.shape} {arr.dtype} vs {self._a.shape} {self._a.dtype}")
        self._ns._upload()
        self._a[...] = arr

    # -- methods CuPy's ndarray has (its own signatures) ----------------------------------
    def astype(self, dtype: Any, order: str = "K", casting: Any = None, subok: Any = None,
               copy: bool = True) -> DeviceArray:
        out = self._a.astype(dtype, order=order, copy=copy)
        return self if out is self._a else DeviceArray(out, self._ns)

    def copy(self, order: str = "C") -> DeviceArray:
        return DeviceArray(self._a.copy(order=order), self._ns)

    def reshape(self, *shape: Any, order: str = "C") -> DeviceArray:
        return DeviceArray(self._a.reshape(*shape, order=order), self._ns)

    def ravel(self, order: str = "C") -> DeviceArray:
        return DeviceArray(self._a.ravel(order=order), self._ns)

    def transpose(self, *axes: Any) -> DeviceArray:
        return DeviceArray(self._a.transpose(*axes), self._ns)

    def view(self, dtype: Any = None) -> DeviceArray:
        return DeviceArray(self._a.view() if dtype is None else self._a.view(dtype), self._ns)

    def clip(self, min: Any = None, max: Any = None, out: Any = None) -> DeviceArray:  # noqa: A002
        return DeviceArray(np.clip(self._a, _operand(min, "clip"), _operand(max, "clip")), self._ns)

    def squeeze(self, axis: Any = None) -> DeviceArray:
        return DeviceArray(self._a.squeeze(axis), self._ns)

    def fill(self, value: Any) -> None:
        self._a.fill(_operand(value, "fill"))

    def _reduce(name: str, takes_dtype: bool) -> Any:    # noqa: N805  (a factory used in the class body)
        def run(self: DeviceArray, axis: Any, dtype: Any, out: Any, keepdims: bool) -> Any:
            kw: dict[str, Any] = {"axis": axis, "keepdims": keepdims}
            if dtype is not None:
                kw["dtype"] = dtype
            res = getattr(np, name)(self._a, **kw)
            if out is not None:
                out._a[...] = res
                return out
            return _wrap(res, self._ns)

        if takes_dtype:         # CuPy's own orders: sum(axis, dtype, out, keepdims), max(axis, out, keepdims)
            def method(self: DeviceArray, axis: Any = None, dtype: Any = None, out: Any = None,
                       keepdims: bool = False) -> Any:
                return run(self, axis, dtype, out, keepdims)
        else:
            def method(self: DeviceArray, axis: Any = None, out: Any = None, keepdims: bool = False) -> Any:
                return run(self, axis, None, out, keepdims)
        method.__name__ = name
        return method

    sum, mean, prod = _reduce("sum", True), _reduce("mean", True), _reduce("prod", True)
    max, min, all, any = _reduce("max", False), _reduce("min", False), _reduce("all", False), _reduce("any", False)
    argmax, argmin = _reduce("argmax", False), _reduce("argmin", False)
    del _reduce

    # -- indexing -----------------------------------------------------------------------
    def __getitem__(self, key: Any) -> DeviceArray:
        keys = key if isinstance(key, tuple) else (key,)
        if any(isinstance(k, DeviceArray) and k.dtype == np.bool_ for k in keys):
            self._ns._host_read("boolean mask")     # CuPy reads the mask's count to size the result
        return _wrap(self._a[_unwrap(key)], self._ns)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._a[_unwrap(key)] = _operand(value, "assignment")

    # -- interoperability ------------------------------------------------------------------
    def __dlpack__(self, *args: Any, **kwargs: Any) -> Any:
        raise BufferError("a CuPy-shaped array lives on the (pretend) GPU: NumPy cannot read it through DLPack; "
                          "use deepnet.to_host")

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        # numpy.exp(cupy_array) runs CuPy's ufunc (NEP 13), as on a real GPU
        args = [_operand(x, ufunc.__name__) for x in inputs]
        outs = kwargs.get("out")
        if outs is not None:
            kwargs["out"] = tuple(_operand(o, ufunc.__name__) for o in outs)
        res = getattr(ufunc, method)(*args, **kwargs)
        if outs is not None:
            return outs[0] if len(outs) == 1 else outs
        return _wrap(res, self._ns)

    def __array_function__(self, func: Any, types_: Any, args: Any, kwargs: Any) -> Any:
        # numpy.sum(cupy_array) dispatches to cupy.sum (NEP 18); functions CuPy lacks fail
        impl = getattr(self._ns, func.__name__, None)
        if impl is None:
            return NotImplemented
        return impl(*args, **kwargs)


def _binary(op: Any, name: str, reflected: bool = False, inplace: bool = False) -> Any:
    def method(self: DeviceArray, other: Any) -> Any:
        b = _operand(other, name)
        if op in (operator.matmul, operator.imatmul):
            self._ns._refuse_cublas((self, other))
        if inplace:
            op(self._a, b)
            return self
        return _wrap(op(b, self._a) if reflected else op(self._a, b), self._ns)
    method.__name__ = name
    return method


for _name, _op in (("add", operator.add), ("sub", operator.sub), ("mul", operator.mul),
                   ("truediv", operator.truediv), ("floordiv", operator.floordiv), ("mod", operator.mod),
                   ("pow", operator.pow), ("matmul", operator.matmul), ("and", operator.and_),
                   ("or", operator.or_), ("xor", operator.xor), ("lshift", operator.lshift),
                   ("rshift", operator.rshift)):
    setattr(DeviceArray, f"__{_name}__", _binary(_op, f"__{_name}__"))
    setattr(DeviceArray, f"__r{_name}__", _binary(_op, f"__r{_name}__", reflected=True))
    _iop = getattr(operator, f"i{_name}")
    setattr(DeviceArray, f"__i{_name}__", _binary(_iop, f"__i{_name}__", inplace=True))
for _name, _op in (("lt", operator.lt), ("le", operator.le), ("eq", operator.eq), ("ne", operator.ne),
                   ("gt", operator.gt), ("ge", operator.ge)):
    setattr(DeviceArray, f"__{_name}__", _binary(_op, f"__{_name}__"))
for _name, _op in (("neg", operator.neg), ("pos", operator.pos), ("abs", operator.abs), ("invert", operator.invert)):
    setattr(DeviceArray, f"__{_name}__", (lambda f: lambda self: DeviceArray(f(self._a), self._ns))(_op))
DeviceArray.__hash__ = None  # type: ignore[assignment]


# ---------------------------------------------------------------------- ElementwiseKernel
_TOKEN = re.compile(r"\s*(?:(\d+\.\d*(?:[eE][-+]?\d+)?[fF]?|\d+(?:[eE][-+]?\d+)?[fF]?)|([A-Za-z_]\w*)|"
                    r"(&&|\|\||==|!=|<<|>>|>=|<=|[-+*/()?:<>!,&|^]))")


class _Expr:
    """A recursive-descent translator of a C expression into a Python/NumPy expression."""

    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        text = text.strip()
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None or m.end() == pos:
                raise ValueError(f"ElementwiseKernel: cannot parse {text[pos:]!r}")
            kind = "num" if m.group(1) else "name" if m.group(2) else "op"
            self.tokens.append((kind, m.group(m.lastindex)))
            pos = m.end()
        self.i = 0

    def peek(self) -> str | None:
        return self.tokens[self.i][1] if self.i < len(self.tokens) else None

    def take(self, want: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (want is not None and tok != want):
            raise ValueError(f"ElementwiseKernel: expected {want!r}, got {tok!r}")
        self.i += 1
        return tok

    def parse(self) -> str:
        out = self.ternary()
        if self.peek() is not None:
            raise ValueError(f"ElementwiseKernel: unexpected {self.peek()!r}")
        return out

    def ternary(self) -> str:
        cond = self.binary(0)
        if self.peek() == "?":
            self.take("?")
            a = self.ternary()
            self.take(":")
            b = self.ternary()
            return f"_where({cond}, {a}, {b})"
        return cond

    _LEVELS = (("||",), ("&&",), ("|",), ("^",), ("&",), ("==", "!="), ("<", "<=", ">", ">="), ("<<", ">>"),
               ("+", "-"), ("*", "/"))
    _PY = {"||": "_or", "&&": "_and"}

    def binary(self, level: int) -> str:
        if level == len(self._LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while self.peek() in self._LEVELS[level]:
            op = self.take()
            right = self.binary(level + 1)
            left = f"{self._PY[op]}({left}, {right})" if op in self._PY else f"({left} {op} {right})"
        return left

    def unary(self) -> str:
        if self.peek() == "-":
            self.take()
            return f"(-{self.unary()})"
        if self.peek() == "!":
            self.take()
            return f"_not({self.unary()})"
        return self.primary()

    def primary(self) -> str:
        kind, tok = self.tokens[self.i] if self.i < len(self.tokens) else ("end", None)
        if tok == "(":
            self.take("(")
            inner = self.ternary()
            self.take(")")
            return f"({inner})"
        if kind == "num":
            self.take()
            return repr(float(tok.rstrip("fF"))) if any(c in tok for c in ".eE") else tok
        if kind == "name":
            self.take()
            if self.peek() == "(":
                self.take("(")
                args = [self.ternary()]
                while self.peek() == ",":
                    self.take(",")
                    args.append(self.ternary())
                self.take(")")
                return f"_f_{tok}({', '.join(args)})"
            return tok
        raise ValueError(f"ElementwiseKernel: unexpected {tok!r}")


_STATEMENT = re.compile(r"^\s*([A-Za-z_]\w*)\s*([-+*/]?=)\s*(.+?)\s*$", re.S)


class ElementwiseKernel:
    """``cupy.ElementwiseKernel(in_params, out_params, operation, name)`` evaluated with NumPy.

    The operation is a sequence of C assignments (``a = ...;``, ``a -= ...;``) over
    arithmetic, comparisons, bitwise ``& | ^ << >>`` (on unsigned integers, wrapping as in C),
    ``&&``/``||``/``!``, ``c ? a : b``, ``T(x)`` casts and math
    functions (``sqrt``, ``exp``, ``log``, ``tanh``, ``abs``/``fabs``, ``max``/``min``).
    Elementwise statements read the values written by earlier ones, as in CUDA.
    """

    def __init__(self, in_params: str, out_params: str, operation: str, name: str = "kernel", **kwargs: Any) -> None:
        if not re.fullmatch(r"[A-Za-z_]\w*", name):
            raise ValueError(f"Invalid kernel name: {name!r}")
        self.name = name
        self.inputs = self._params(in_params)
        self.outputs = self._params(out_params)
        self.statements = []
        const = {p for _, p in self.inputs} - {p for _, p in self.outputs}
        for stmt in (s for s in operation.split(";") if s.strip()):
            m = _STATEMENT.match(stmt)
            if m is None:
                raise ValueError(f"ElementwiseKernel {name}: cannot parse statement {stmt.strip()!r}")
            target, op, expr = m.groups()
            if target in const:       # CUDA: inputs are const, the kernel would not compile
                raise ValueError(f"ElementwiseKernel {name}: assignment to the input parameter {target!r}")
            self.statements.append((target, op, compile(_Expr(expr).parse(), f"<{name}>", "eval")))
        self.operation = operation

    @staticmethod
    def _params(text: str) -> list[tuple[str, str]]:
        out = []
        for part in (p.strip() for p in text.split(",") if p.strip()):
            typ, _, name = part.rpartition(" ")
            out.append((typ.strip(), name.strip()))
        return out

    def __call__(self, *args: Any, size: Any = None, block_size: Any = None, stream: Any = None) -> Any:
        n_in, n_out = len(self.inputs), len(self.outputs)
        if len(args) not in (n_in, n_in + n_out):
            raise TypeError(f"Wrong number of arguments for {self.name!r}. It must be either {n_in} or "
                            f"{n_in + n_out} (with outputs), but given {len(args)}.")
        for a in args:
            if isinstance(a, np.ndarray):
                raise TypeError(f"Unsupported type {type(a)}: kernel {self.name!r} takes device arrays and scalars")
        outs = list(args[n_in:])
        if len(outs) < n_out:
            raise TypeError(f"{self.name}: this evaluator needs the output arrays passed explicitly")
        if any(not isinstance(o, DeviceArray) for o in outs):
            raise TypeError(f"{self.name}: outputs must be device arrays")
        types_: dict[str, np.dtype] = {}
        for (typ, pname), a in zip(self.inputs + self.outputs, args, strict=False):
            if isinstance(a, DeviceArray) and len(typ) == 1 and typ.isupper():
                if types_.setdefault(typ, a.dtype) != a.dtype:      # CuPy: no implicit casts between arrays
                    raise TypeError(f"Type is mismatched. {pname} {a.dtype.type} {types_[typ].type} ({self.name})")
        env: dict[str, Any] = {}
        for (typ, pname), a in zip(self.inputs + self.outputs, args, strict=True):
            value = a._a.copy() if isinstance(a, DeviceArray) else a
            if typ in types_ and not isinstance(a, DeviceArray):
                value = types_[typ].type(value)       # scalars take the type parameter's dtype
            env[pname] = value
        env.update({"_where": np.where, "_and": np.logical_and, "_or": np.logical_or, "_not": np.logical_not,
                    "_f_sqrt": np.sqrt, "_f_exp": np.exp, "_f_log": np.log, "_f_tanh": np.tanh,
                    "_f_abs": np.abs, "_f_fabs": np.abs, "_f_max": np.maximum, "_f_min": np.minimum,
                    "_f_fmax": np.maximum, "_f_fmin": np.minimum, "_f_bool": lambda v: np.asarray(v, bool)})
        for typ, dt in types_.items():
            env[f"_f_{typ}"] = dt.type
        with np.errstate(all="ignore"):
            for target, op, code in self.statements:
                value = eval(code, {"__builtins__": {}}, env)   # noqa: S307  (deepnet's own kernel source, parsed)
                if op != "=":
                    value = {"+=": operator.add, "-=": operator.sub, "*=": operator.mul,
                             "/=": operator.truediv}[op](env[target], value)
                env[target] = value
        for (_, pname), o in zip(self.outputs, outs, strict=True):
            o._a[...] = env[pname]
        return outs[0] if n_out == 1 else tuple(outs)


# ---------------------------------------------------------------------- the namespace
class _MemoryPointer:
    """``cupy.cuda.MemoryPointer``: ``ptr`` is a device address (here the NumPy buffer's)."""

    def __init__(self, ptr: int, owner: Any = None) -> None:
        self.ptr = ptr
        self._owner = owner          # keeps the memory alive while the pointer is

    def __int__(self) -> int:
        return self.ptr


class _Graph:
    """``cupy.cuda.Graph`` from :meth:`_Stream.end_capture`; it cannot be replayed here."""

    def launch(self, stream: Any = None) -> None:
        raise RuntimeError("the CuPy-shaped backend cannot replay CUDA graphs: the work ran eagerly while it was "
                           "captured; replay on a GPU")

    def upload(self, stream: Any = None) -> None:
        return None


class _Stream:
    """``cupy.cuda.Stream``: ``with stream:`` makes it current (per thread, nested as in CuPy);
    ``begin_capture``/``end_capture`` record nothing (work runs eagerly) but put the
    namespace in CUDA's capture rules while the current stream captures."""

    _ns: CupyShaped                      # set on each namespace's own subclass
    _ptrs = itertools.count(0x7000_0000, 0x100)

    def __init__(self, null: bool = False, non_blocking: bool = False, ptds: bool = False,
                 priority: Any = None) -> None:
        self.ptr = 0 if null else (2 if ptds else next(self._ptrs))
        self._capturing = False
        self._invalidated = False
        self._previous: list[_Stream] = []

    def __enter__(self) -> _Stream:
        self._previous.append(self._ns._current_stream())
        self.use()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._previous.pop().use()

    def use(self) -> _Stream:
        self._ns._stream_state.current = self
        return self

    def __repr__(self) -> str:
        return f"<Stream {self.ptr} (device 0)>"

    def record(self, event: Any = None) -> Any:
        return _Event()

    def wait_event(self, event: Any) -> None:
        return None

    def synchronize(self) -> None:
        if self._capturing:
            self.invalidate_capture()
            raise RuntimeError("cudaErrorStreamCaptureUnsupported: operation not permitted when stream is capturing "
                               "(Stream.synchronize)")

    # -- capture ----------------------------------------------------------------------------
    def begin_capture(self, mode: Any = None) -> None:
        if self.ptr == 0:
            raise RuntimeError("cudaErrorStreamCaptureUnsupported: the null stream cannot be captured; "
                               "capture on a cupy.cuda.Stream()")
        if self._capturing:
            raise RuntimeError("cudaErrorIllegalState: the stream is already capturing")
        self._capturing, self._invalidated = True, False

    def end_capture(self) -> _Graph:
        if not self._capturing:
            raise RuntimeError("cudaErrorIllegalState: end_capture on a stream that is not capturing")
        self._capturing = False
        if self._invalidated:
            raise RuntimeError("cudaErrorStreamCaptureInvalidated: the capture was invalidated by an operation "
                               "not permitted while capturing")
        return _Graph()

    def is_capturing(self) -> bool:
        return self._capturing

    def invalidate_capture(self) -> None:
        """What CUDA does to a capture after an unsupported call: it can only fail at end_capture."""
        self._invalidated = True


class _Event:
    done = True

    def synchronize(self) -> None:
        return None


class _Device:
    def __init__(self, device: Any = None) -> None:
        if device not in (None, 0):
            raise RuntimeError(f"cudaErrorInvalidDevice: invalid device ordinal {device}")
        self.id = 0

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, _Device) and other.id == self.id

    def __hash__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return "<CUDA Device 0 (CuPy-shaped)>"

    def use(self) -> None:
        """Make this the current device (there is one)."""


class _MemoryPool:
    """``cupy.cuda.MemoryPool(allocator=None)``: NumPy buffers, nothing pooled or counted."""

    def __init__(self, allocator: Any = None) -> None:
        self.allocator = allocator

    def malloc(self, size: int) -> _MemoryPointer:
        buf = np.empty(max(0, int(size)), np.uint8)
        return _MemoryPointer(buf.ctypes.data, buf)

    def used_bytes(self) -> int:
        return 0

    def total_bytes(self) -> int:
        return 0

    def get_limit(self) -> int:
        return 0

    def free_all_blocks(self) -> None:
        return None


class _Generator:
    """``cupy.random.Generator``: draws on the device (no upload); NumPy's PCG64 here."""

    def __init__(self, ns: CupyShaped, seed: Any) -> None:
        self._ns = ns
        self._gen = np.random.default_rng(seed)

    def random(self, size: Any = None, dtype: Any = np.float64, out: Any = None) -> Any:
        self._ns._refuse_while_capturing(NotImplementedError, CURAND_CAPTURE_ERROR)
        if np.dtype(dtype) not in (np.float32, np.float64):
            raise TypeError(f"cupy.random.Generator.random: dtype must be float32 or float64, got {dtype}")
        return _wrap(self._gen.random(size, dtype=dtype), self._ns)


class CupyShaped(types.ModuleType):
    """The ``cupy`` namespace as :class:`CupyOps` sees it, checked against the real ``cupy``."""

    def __init__(self, cupy: Any) -> None:
        super().__init__("cupy_shaped")
        self._real = cupy
        self.__version__ = f"{cupy.__version__}-shaped"
        self.host_syncs = HostSyncs()
        self.ndarray = DeviceArray
        self.ElementwiseKernel = ElementwiseKernel
        for t in ("float16", "float32", "float64", "int8", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                  "bool_", "bool"):
            setattr(self, t, getattr(np, t))
        ns = self

        class OutOfMemoryError(MemoryError):
            pass

        stream_type = type("Stream", (_Stream,), {"_ns": self})
        self._null_stream = stream_type(null=True)
        self._stream_state = threading.local()
        stream_type.null = self._null_stream

        def get_current_stream(device_id: int = -1) -> _Stream:
            return ns._current_stream()

        self.cuda = types.SimpleNamespace(
            Device=_Device, Stream=stream_type, get_current_stream=get_current_stream, Graph=_Graph,
            MemoryPool=_MemoryPool, MemoryPointer=_MemoryPointer, using_allocator=_using_allocator,
            alloc_pinned_memory=lambda nbytes: bytearray(nbytes),
            memory=types.SimpleNamespace(OutOfMemoryError=OutOfMemoryError),
            runtime=types.SimpleNamespace(getDeviceCount=lambda: 1, memGetInfo=lambda: (64 << 30, 80 << 30),
                                          getDeviceProperties=lambda i: {"name": b"CuPy-shaped (NumPy on the host)"}),
        )
        self.random = types.SimpleNamespace(default_rng=lambda seed=None: _Generator(ns, seed))
        pool = _MemoryPool()
        self.get_default_memory_pool = lambda: pool
        self.get_default_pinned_memory_pool = lambda: pool

    # -- streams and capture -----------------------------------------------------------
    def _current_stream(self) -> _Stream:
        return getattr(self._stream_state, "current", None) or self._null_stream

    def _refuse_while_capturing(self, error: type[Exception], message: str) -> None:
        """Raise ``error`` if the current stream captures; a CUDA error (not CuPy's own
        NotImplementedError check, made before calling CUDA) also spoils the capture."""
        stream = self._current_stream()
        if stream.is_capturing():
            if error is not NotImplementedError:
                stream.invalidate_capture()
            raise error(message)

    def _host_read(self, kind: str) -> None:
        """A read of device memory by the host: refused while capturing, else counted."""
        self._refuse_while_capturing(RuntimeError, "cudaErrorStreamCaptureUnsupported: operation not permitted when "
                                     f"stream is capturing (a host read: {kind})")
        self.host_syncs.read(kind)

    def _upload(self) -> None:
        """A copy from host memory: refused while capturing, else counted."""
        self._refuse_while_capturing(RuntimeError, "cudaErrorStreamCaptureUnsupported: operation not permitted when "
                                     "stream is capturing (an upload from the host)")
        self.host_syncs.uploads += 1

    def _refuse_cublas(self, operands: Any) -> None:
        """CuPy's check before a cuBLAS call: none while the current stream captures."""
        if any(isinstance(x, DeviceArray) and x.dtype.kind in "fc" for x in operands):
            self._refuse_while_capturing(NotImplementedError, CUBLAS_CAPTURE_ERROR)

    # -- transfers -------------------------------------------------------------------
    def asarray(self, a: Any, dtype: Any = None, order: Any = None, *, copy: Any = None,
                blocking: bool = False) -> DeviceArray:
        if isinstance(a, DeviceArray):
            out = a._a.astype(dtype, copy=bool(copy)) if dtype is not None else (a._a.copy() if copy else a._a)
            return a if out is a._a else DeviceArray(out, self)
        self._upload()
        return DeviceArray(np.array(a, dtype=dtype, order=order or "K", copy=True), self)

    def array(self, obj: Any, dtype: Any = None, copy: bool = True, order: str = "K", subok: bool = False,
              ndmin: int = 0, *, blocking: bool = False) -> DeviceArray:
        if isinstance(obj, DeviceArray):
            return DeviceArray(np.array(obj._a, dtype=dtype, copy=copy, order=order, ndmin=ndmin), self)
        return self.asarray(obj, dtype=dtype, order=order)

    def asnumpy(self, a: Any, stream: Any = None, order: str = "C", out: Any = None, *,
                blocking: bool = True) -> np.ndarray:
        if isinstance(a, DeviceArray):
            return a.get(order=order)
        return np.asarray(a, order=order)

    # -- everything else: checked against cupy, computed by NumPy ---------------------------
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        real = getattr(self._real, name, None)
        if real is None:
            raise AttributeError(f"module 'cupy' has no attribute {name!r}")
        impl = getattr(np, name, None)
        if impl is None:
            raise AttributeError(f"cupy.{name} has no NumPy counterpart in the CuPy-shaped backend")
        check = _checker(real, name)
        ns = self
        cublas = name in _CUBLAS_FUNCTIONS

        def call(*args: Any, **kwargs: Any) -> Any:
            check(args, kwargs)
            if cublas:
                ns._refuse_cublas(args)
            host_args = [_operand_or_seq(a, name) for a in args]
            host_kw = {k: _operand_or_seq(v, name) for k, v in kwargs.items()}
            res = impl(*host_args, **host_kw)
            out = kwargs.get("out")
            if isinstance(out, DeviceArray):
                return out
            return _wrap(res, ns)

        call.__name__ = name
        setattr(self, name, call)     # cache: later lookups skip __getattr__
        return call


@contextlib.contextmanager
def _using_allocator(allocator: Any = None) -> Any:
    """``cupy.cuda.using_allocator(allocator=None)``: nothing to switch here."""
    yield


def _operand_or_seq(x: Any, name: str) -> Any:
    if isinstance(x, (list, tuple)):
        return type(x)(_operand_or_seq(v, name) for v in x)
    return _operand(x, f"cupy.{name}")


def _checker(real: Any, name: str) -> Any:
    """A function that raises CuPy's TypeError for arguments ``cupy.<name>`` does not take."""
    nin = getattr(real, "nin", None)
    if nin is not None:                  # a ufunc: inputs (and outputs) positionally, few keywords
        nargs = nin + getattr(real, "nout", 1)

        def check_ufunc(args: tuple, kwargs: dict) -> None:
            bad = set(kwargs) - _UFUNC_KWARGS
            if bad:
                raise TypeError(f"Wrong arguments {sorted(bad)} for ufunc {name}")
            if not nin <= len(args) <= nargs:
                raise TypeError(f"Wrong number of arguments for {name!r}. It must be either {nin} or {nargs} "
                                f"(with outputs), but given {len(args)}.")
        return check_ufunc
    try:
        sig = inspect.signature(real)
    except (TypeError, ValueError):
        return lambda args, kwargs: None     # no introspectable signature: nothing to check against

    def check(args: tuple, kwargs: dict) -> None:
        try:
            sig.bind(*args, **kwargs)
        except TypeError as err:
            raise TypeError(f"{name}() {err}") from None
    return check


def _shaped_namespace() -> CupyShaped:
    """A new :class:`CupyShaped` namespace over the installed ``cupy`` package (no GPU needed)."""
    try:
        import cupy
    except ImportError as err:
        raise BackendError("the 'cupy-shaped' test backend reads CuPy's signatures: pip install cupy-cuda13x "
                           "(or cupy-cuda12x; no GPU needed)") from err
    return CupyShaped(cupy)


class CupyShapedOps(CupyOps):
    """The generic CuPy backend (:class:`CupyOps`) over a :class:`CupyShaped` namespace
    (``cupy``: one to share, else a new one)."""

    name = "cupy-shaped"
    #: captured steps run inside the shaped stream's capture (what CUDA refuses there fails)
    graphs_type = CheckedGraphs

    def __init__(self, cupy: Any = None) -> None:
        super().__init__(_shaped_namespace() if cupy is None else cupy)
        #: products through CupyProducts as on a GPU; its cuBLAS handle calls cuBLAS emulated
        #: with NumPy (so captured, TF32 and bf16 products run here)
        self.products = CupyProducts(self.xp, lib=FakeCublasLib())

    def device_rng(self, seed: int) -> DeviceRNG:
        """The Array-API Philox (the shaped kernel evaluator cannot run the fused kernel's C
        preamble; the two are bit-identical, tests/test_counter_rng.py)."""
        return CounterRNG(self, seed)


class FusedCupyShapedOps(CupyShapedOps, FusedCupyOps):
    """:class:`FusedCupyOps` over a :class:`CupyShaped` namespace: the fused kernels' C
    source runs through :class:`ElementwiseKernel`.  The registered ``cupy-shaped`` backend."""

    #: unfold/fold take the generic Array-API path: the fused window kernels' loops, ``%`` and
    #: integer division are beyond the evaluator (tests/test_windows.py runs their C source with g++)
    fused_windows = False
