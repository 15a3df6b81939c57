"""A backend's graph companion, ``ops.graphs``: capture a step once, replay it many times.

A CUDA graph records every kernel a function launches, on fixed addresses, and replays
them with one call and no Python.  The training loop asks only what the companion can do:

* :class:`StepGraphs` (every backend without CUDA graphs): :meth:`~StepGraphs.capture`
  runs the step once and a replay runs it again, the same Python, the same buffers.  This is
  how the captured path's bookkeeping is tested on NumPy and array-api-strict;
* :class:`CudaGraphs` (CuPy): the step is captured on the companion's own stream (CuPy's
  default capture mode, relaxed) while allocations go to a private memory pool that lives
  as long as the graph (a block freed during capture is reused only by later nodes of the
  same graph, never by anyone else), and a replay is ``graph.launch``;
* :class:`CheckedGraphs` (the CuPy-shaped test backend): like :class:`StepGraphs`, but every
  run of the step happens inside the shaped stream's capture, which refuses what CUDA
  refuses there (cuBLAS through ``cupy.matmul``, cuRAND, host reads, uploads).

In every case :meth:`~StepGraphs.capture` *performs* the step once (on CUDA: capture, then
one launch), so the caller counts it as a step.  The captured function must not change
Python state that a replay would need changed (a CUDA replay runs no Python): per-step
values live in device arrays updated by device operations.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import BackendError
from .array_types import BackendCore


class CaptureError(BackendError):
    """The step could not be captured (the reason names what refused)."""


def prepare_products(ops: BackendCore) -> None:
    """Before a capture, on the capturing stream: let the backend's products make what they
    need eagerly (CuPy: deepnet's cuBLAS handle, and one product through it).  A failure is a
    :class:`CaptureError` naming its cause (``graphs="auto"`` then trains without a graph)."""
    prepare = getattr(getattr(ops, "products", None), "prepare_capture", None)
    if prepare is None:
        return
    try:
        prepare()
    except (BackendError, OSError, AttributeError) as err:
        raise CaptureError(f"deepnet's cuBLAS handle, which captured products need, is unusable: "
                           f"{' '.join(str(err).split())}") from None


class Replay:
    """A captured step: :meth:`launch` runs it once more."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._fn = fn

    def launch(self) -> None:
        self._fn()


class StepGraphs:
    """No graphs on this backend: a capture runs the step, a replay runs it again."""

    #: whether a replay skips Python (a real graph); False: the step's Python runs each time
    captures = False

    def __init__(self, ops: BackendCore) -> None:
        self.ops = ops

    @contextlib.contextmanager
    def stream(self) -> Iterator[None]:
        """The context a captured run works in (CUDA: the companion's stream)."""
        yield

    def private_memory(self) -> contextlib.AbstractContextManager:
        """A memory scope for a graph: what a step allocates inside it comes from memory no one
        else is handed (CUDA: a pool of its own).  Generic: the usual allocator."""
        return contextlib.nullcontext()

    def capture(self, fn: Callable[[], Any], steps: int = 1, memory: Any = None) -> Replay:
        """Run ``fn`` ``steps`` times (one captured unit) and return its replay; ``memory``: the
        scope (:meth:`private_memory`) its allocations come from, kept as long as the replay."""
        def unit() -> None:
            for _ in range(steps):
                fn()
        unit()
        return Replay(unit)


class CheckedGraphs(StepGraphs):
    """Every run of the step inside the (CuPy-shaped) stream's capture, so anything CUDA
    refuses during capture fails here too; replays run the Python again."""

    def __init__(self, ops: BackendCore) -> None:
        super().__init__(ops)
        self._stream = ops.xp.cuda.Stream(non_blocking=True)

    @contextlib.contextmanager
    def stream(self) -> Iterator[None]:
        with self._stream:
            yield

    def _checked(self, fn: Callable[[], Any], steps: int) -> Callable[[], None]:
        stream = self._stream

        def unit() -> None:
            stream.begin_capture()
            try:
                for _ in range(steps):
                    fn()
            except BaseException:
                with contextlib.suppress(Exception):    # the capture is invalidated: report the first error
                    stream.end_capture()
                raise
            stream.end_capture()
        return unit

    def capture(self, fn: Callable[[], Any], steps: int = 1, memory: Any = None) -> Replay:
        unit = self._checked(fn, steps)
        with self._stream:
            prepare_products(self.ops)
        try:
            unit()
        except (NotImplementedError, RuntimeError) as err:
            raise CaptureError(f"{type(err).__name__}: {err}") from None
        return Replay(unit)


class _PrivatePool:
    """A CuPy memory pool of a graph's own, made the allocator inside ``with`` (reusable)."""

    def __init__(self, cupy: Any) -> None:
        self._cp = cupy
        self.pool = cupy.cuda.MemoryPool()
        self._scopes: list[Any] = []

    def __enter__(self) -> _PrivatePool:
        scope = self._cp.cuda.using_allocator(self.pool.malloc)
        scope.__enter__()
        self._scopes.append(scope)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._scopes.pop().__exit__(*exc)


class _CudaReplay(Replay):
    """A CUDA graph with the private pool its memory came from (kept alive together)."""

    def __init__(self, graph: Any, memory: Any, stream: Any) -> None:
        self._graph, self._memory, self._stream = graph, memory, stream

    def launch(self) -> None:
        self._graph.launch(self._stream)


class CudaGraphs(StepGraphs):
    """CUDA graphs through CuPy: capture on a non-blocking stream with a private pool."""

    captures = True

    def __init__(self, ops: BackendCore) -> None:
        super().__init__(ops)
        self._stream: Any = None

    def _the_stream(self) -> Any:
        if self._stream is None:
            self._stream = self.ops.xp.cuda.Stream(non_blocking=True)
        return self._stream

    @contextlib.contextmanager
    def stream(self) -> Iterator[None]:
        """Everything of a captured run (eager steps, uploads of the learning rate, the
        replays) goes to one stream, in order; capture cannot use the legacy default stream."""
        stream = self._the_stream()
        stream.wait_event(self.ops.xp.cuda.get_current_stream().record())   # after work queued before
        with stream:
            yield
        self.ops.xp.cuda.get_current_stream().wait_event(stream.record())   # and before work queued after

    def private_memory(self) -> _PrivatePool:
        """A pool of the graph's own: a block freed during capture goes back to it and is
        reused only by later nodes of the same graph, never handed to anyone else.  A warm-up
        step run inside it first leaves the blocks the capture will ask for cached there."""
        return _PrivatePool(self.ops.xp)

    def capture(self, fn: Callable[[], Any], steps: int = 1, memory: Any = None) -> Replay:
        stream = self._the_stream()
        with stream:
            prepare_products(self.ops)      # cuBLAS's handle, workspace and first call: before the capture
        memory = self.private_memory() if memory is None else memory
        with stream, memory:
            stream.begin_capture()
            try:
                for _ in range(steps):
                    fn()
            except Exception as err:
                with contextlib.suppress(Exception):    # an invalidated capture may refuse to end cleanly
                    stream.end_capture()
                raise CaptureError(f"{type(err).__name__}: {' '.join(str(err).split())}") from None
            try:
                graph = stream.end_capture()            # CUDA may refuse only here (an invalidated capture)
            except Exception as err:
                raise CaptureError(f"{type(err).__name__}: {' '.join(str(err).split())}") from None
        replay = _CudaReplay(graph, memory, stream)
        replay.launch()              # capture recorded the step without running it
        return replay
