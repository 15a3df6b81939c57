"""Blocks of layers: Sequential, Residual, and the branch/merge pair Concatenate and Add.

Each combinator is a :class:`~deepnet.layers.Layer` whose children are declared with
``add_layer``; the base class forwards parameters, state, randomness, moves and flags to
them.  Forward and backward are written out here (derived in docs/derivation.md, "Blocks"):
a child's error arrives exactly as the chain rule gives it, and where one input feeds several
paths the errors of the paths are summed.

A layer may be used at several places of a block (shared parameters): each call's
:attr:`~deepnet.layers.Layer.cached` is kept in the block's own cache and given back to the
layer before the matching backward, so both calls add their gradients to the same ∂f/∂θ.
"""

from __future__ import annotations

from typing import Any

from ..backend import Array
from ..errors import ShapeError
from .base import Layer, build_layer, layer_entry


class Block(Layer):
    """Common machinery of the combinators: calling a child and calling it back."""

    #: diagnostics: called with (path, error) for each child's backward (see ``Layer.record_errors``)
    _record: Any = None
    _prefix: str = ""

    def record_errors(self, record: Any, prefix: str = "") -> None:
        self._record, self._prefix = record, prefix
        super().record_errors(record, prefix)

    def _add_children(self, kind: str, children: tuple[Layer, ...]) -> list[Layer]:
        """Check and declare the children, named ``"0"``, ``"1"``, … (``kind``: their word in errors)."""
        if not children:
            raise ValueError(f"{type(self).__name__} needs at least one {kind}, got none")
        for i, child in enumerate(children):
            if not isinstance(child, Layer):
                raise TypeError(f"{type(self).__name__}: {kind} {i} must be a deepnet Layer, got {type(child).__name__}")
        for i, child in enumerate(children):
            self.add_layer(str(i), child)
        return list(children)

    def _call(self, child: Layer, x: Array, training: bool) -> tuple[Array, Any]:
        """y = child(x), and what the child kept for backward (None in evaluation)."""
        y = child.forward(x, training)
        return y, (child.cached if training else None)

    def _back(self, name: str, kept: Any, error: Array, need_input_grad: bool) -> Array | None:
        """Backward of child ``name`` for the call that kept ``kept``."""
        child = self._layers[name]
        if self._record is not None:
            self._record(self._prefix + name, error)
        child.cached = kept
        return child.backward(error, need_input_grad)

    @property
    def backward_free(self) -> bool:          # type: ignore[override]
        """Only hands the error down when every child does."""
        return all(c.backward_free for c in self.sublayers().values())

    @property
    def capturable(self) -> bool:             # type: ignore[override]
        """A CUDA graph may capture the block when it may capture every child."""
        return all(c.capturable for c in self.sublayers().values())

    def __repr__(self) -> str:
        inner = ", ".join(repr(c) for c in self.sublayers().values())
        return f"{self.name}({inner})"


class Sequential(Block):
    """Layers applied in order, as one layer: y = f_L(… f_1(x)).

    Backward walks them in reverse, each handing ẽ to the one below (the network's own step,
    inside a block).  Children are named ``"0"``, ``"1"``, …  The layers are given as
    arguments (``Sequential(a, b)``, as in PyTorch) or as one list (``Sequential([a, b])``, as
    in Keras and ``Network``).
    """

    def __init__(self, *layers: Layer | list[Layer] | tuple[Layer, ...]) -> None:
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        self.layers = self._add_children("layer", layers)  # type: ignore[arg-type]

    def get_config(self) -> dict[str, Any]:
        return {"layers": [layer_entry(c) for c in self.layers]}

    @classmethod
    def from_config(cls, config: dict[str, Any], classes: Any = None) -> Layer:
        return cls(*(build_layer(e, classes) for e in config["layers"]))

    def input_shape(self) -> tuple[int, ...] | None:
        return self.layers[0].input_shape()

    def input_spec(self) -> tuple[int | None, ...] | None:
        """The first layer's (a block starting with Conv2D takes images, like Conv2D)."""
        return self.layers[0].input_spec()

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        shape = tuple(in_shape)
        for i, layer in enumerate(self.layers):
            try:
                shape = tuple(layer.output_shape(shape))
            except ShapeError as err:
                raise ShapeError(f"Sequential layer {i} ({layer.name}): {err}") from None
        return shape

    def forward(self, x: Array, training: bool = False) -> Array:
        kept = []
        for layer in self.layers:
            x, k = self._call(layer, x, training)
            kept.append(k)
        self._cache = kept if training else None
        return x

    def backward(self, grad_output: Array, need_input_grad: bool = True) -> Array | None:
        kept = self._need_cache()
        e: Array | None = grad_output
        for i in range(len(self.layers) - 1, -1, -1):
            # ẽ_{i-1} = f_i.backward(ẽ_i); the lowest layer computes its input error only if asked
            e = self._back(str(i), kept[i], e, need_input_grad or i > 0)
        return e


class Residual(Block):
    """y = block(x) + shortcut(x): the shortcut is the identity (None) or a projection layer
    (e.g. a stride-2 ``Conv2D`` with 1×1 kernels where the block changes the shape).

    Backward, for the error ẽ = ∂f/∂y: both paths receive ẽ, and x's error is their sum,
    ẽ_in = block.backward(ẽ) + shortcut.backward(ẽ) (identity: + ẽ).
    """

    def __init__(self, block: Layer, shortcut: Layer | None = None) -> None:
        super().__init__()
        self.block = self.add_layer("block", block)
        self.shortcut = None if shortcut is None else self.add_layer("shortcut", shortcut)

    def get_config(self) -> dict[str, Any]:
        return {"block": layer_entry(self.block),
                "shortcut": None if self.shortcut is None else layer_entry(self.shortcut)}

    @classmethod
    def from_config(cls, config: dict[str, Any], classes: Any = None) -> Layer:
        sc = config.get("shortcut")
        return cls(build_layer(config["block"], classes), None if sc is None else build_layer(sc, classes))

    def input_shape(self) -> tuple[int, ...] | None:
        want = self.block.input_shape()
        return want if want is not None or self.shortcut is None else self.shortcut.input_shape()

    def input_spec(self) -> tuple[int | None, ...] | None:
        """The block's (the shortcut's where the block declares nothing)."""
        want = self.block.input_spec()
        return want if want is not None or self.shortcut is None else self.shortcut.input_spec()

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        out = tuple(self.block.output_shape(in_shape))
        short = tuple(in_shape) if self.shortcut is None else tuple(self.shortcut.output_shape(in_shape))
        if out != short:
            what = "the input" if self.shortcut is None else f"the shortcut ({self.shortcut.name})"
            hint = "" if self.shortcut is not None else ": give a projection shortcut"
            raise ShapeError(f"Residual: the block ({self.block.name}) outputs per-sample shape {out}, but {what} "
                             f"has shape {short}{hint}")
        return out

    def forward(self, x: Array, training: bool = False) -> Array:
        y, kb = self._call(self.block, x, training)
        if self.shortcut is None:
            s, ks = x, None
        else:
            s, ks = self._call(self.shortcut, x, training)
        if tuple(y.shape) != tuple(s.shape):
            raise ShapeError(f"Residual: the block ({self.block.name}) outputs shape {tuple(y.shape)}, the "
                             f"shortcut {tuple(s.shape)} for an input of shape {tuple(x.shape)}")
        self._cache = (kb, ks) if training else None
        return y + s                                                      # y = block(x) + shortcut(x)

    def backward(self, grad_output: Array, need_input_grad: bool = True) -> Array | None:
        kb, ks = self._need_cache()
        ops = self.ops
        # both paths receive ẽ; the block gets its own copy (a layer may overwrite its error)
        e_block = self._back("block", kb, ops.copy(grad_output), need_input_grad)
        if self.shortcut is None:
            e_short = grad_output                                         # identity: ∂(x)/∂x ẽ = ẽ
        else:
            e_short = self._back("shortcut", ks, grad_output, need_input_grad)
        if not need_input_grad:
            return None
        return e_block + e_short                    # ẽ_in = block.backward(ẽ) + shortcut.backward(ẽ)


class _Branches(Block):
    """Parallel branches on the same input (children ``"0"``, ``"1"``, …)."""

    def __init__(self, *branches: Layer) -> None:
        super().__init__()
        self.branches = self._add_children("branch", branches)

    def input_shape(self) -> tuple[int, ...] | None:
        for b in self.branches:
            want = b.input_shape()
            if want is not None:
                return want
        return None

    def input_spec(self) -> tuple[int | None, ...] | None:
        """That of the first branch declaring one."""
        for b in self.branches:
            want = b.input_spec()
            if want is not None:
                return want
        return None

    def _branch_shapes(self, in_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
        out = []
        for i, b in enumerate(self.branches):
            try:
                out.append(tuple(b.output_shape(in_shape)))
            except ShapeError as err:
                raise ShapeError(f"{self.name} branch {i} ({b.name}): {err}") from None
        return out

    def _forward_all(self, x: Array, training: bool) -> tuple[list[Array], list[Any]]:
        ys, kept = [], []
        for b in self.branches:
            y, k = self._call(b, x, training)
            ys.append(y)
            kept.append(k)
        return ys, kept

    def _backward_sum(self, errors: list[Array], kept: list[Any], need_input_grad: bool) -> Array | None:
        """ẽ_in = Σ_k branch_k.backward(ẽ_k): the input feeds every branch."""
        total: Array | None = None
        for i in range(len(self.branches)):
            e = self._back(str(i), kept[i], errors[i], need_input_grad)
            if need_input_grad:
                total = e if total is None else total + e
        return total


class Concatenate(_Branches):
    """Branches on the same input, outputs concatenated on ``axis`` (1: the features of rows
    (n, d), the channels of images (n, C, H, W)): y = [b_1(x), …, b_K(x)].

    Backward: ẽ is split at the same widths, branch k receives its part ẽ_k, and
    ẽ_in = Σ_k b_k.backward(ẽ_k).
    """

    def __init__(self, *branches: Layer, axis: int = 1) -> None:
        super().__init__(*branches)
        if not isinstance(axis, int) or isinstance(axis, bool) or axis < 1:
            raise ValueError(f"Concatenate: axis must be a positive integer (1: features or channels), got {axis!r}")
        self.axis = axis

    def get_config(self) -> dict[str, Any]:
        return {"branches": [layer_entry(b) for b in self.branches], "axis": self.axis}

    @classmethod
    def from_config(cls, config: dict[str, Any], classes: Any = None) -> Layer:
        return cls(*(build_layer(e, classes) for e in config["branches"]), axis=int(config.get("axis", 1)))

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        shapes = self._branch_shapes(in_shape)
        a = self.axis - 1
        rest = {s[:a] + s[a + 1:] for s in shapes}
        if any(len(s) <= a for s in shapes) or len(rest) != 1:
            raise ShapeError(f"Concatenate(axis={self.axis}): the branches output per-sample shapes {shapes}, "
                             f"which differ on other axes than {self.axis}")
        first = shapes[0]
        return first[:a] + (sum(s[a] for s in shapes),) + first[a + 1:]

    def forward(self, x: Array, training: bool = False) -> Array:
        ys, kept = self._forward_all(x, training)
        widths = [int(y.shape[self.axis]) for y in ys]
        self._cache = (kept, widths) if training else None
        return self.ops.xp.concat(ys, axis=self.axis)                      # y = [b_1(x), …, b_K(x)]

    def backward(self, grad_output: Array, need_input_grad: bool = True) -> Array | None:
        kept, widths = self._need_cache()
        ops, errors, start = self.ops, [], 0
        for w in widths:                                                   # ẽ = [ẽ_1, …, ẽ_K]
            index = (slice(None),) * self.axis + (slice(start, start + w), Ellipsis)
            errors.append(ops.copy(grad_output[index]))
            start += w
        return self._backward_sum(errors, kept, need_input_grad)           # ẽ_in = Σ_k b_k.backward(ẽ_k)


class Add(_Branches):
    """Branches on the same input, outputs summed: y = Σ_k b_k(x) (every branch's output of
    the same shape).  Backward: every branch receives ẽ; ẽ_in = Σ_k b_k.backward(ẽ)."""

    def get_config(self) -> dict[str, Any]:
        return {"branches": [layer_entry(b) for b in self.branches]}

    @classmethod
    def from_config(cls, config: dict[str, Any], classes: Any = None) -> Layer:
        return cls(*(build_layer(e, classes) for e in config["branches"]))

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        shapes = self._branch_shapes(in_shape)
        if len(set(shapes)) != 1:
            raise ShapeError(f"Add: the branches output different per-sample shapes {shapes}")
        return shapes[0]

    def forward(self, x: Array, training: bool = False) -> Array:
        ys, kept = self._forward_all(x, training)
        y = ys[0]
        for other in ys[1:]:
            if tuple(other.shape) != tuple(y.shape):
                raise ShapeError(f"Add: the branches output shapes {[tuple(v.shape) for v in ys]}")
            y = y + other                                                  # y = Σ_k b_k(x)
        self._cache = kept if training else None
        return y

    def backward(self, grad_output: Array, need_input_grad: bool = True) -> Array | None:
        kept = self._need_cache()
        n = len(self.branches)
        # every branch receives ẽ (its own copy but the last: a layer may overwrite its error)
        errors = [grad_output if i == n - 1 else self.ops.copy(grad_output) for i in range(n)]
        return self._backward_sum(errors, kept, need_input_grad)           # ẽ_in = Σ_k b_k.backward(ẽ)
