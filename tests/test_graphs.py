"""The captured training step (fit(graphs=...)): its bookkeeping, run without capture on every
backend, trains exactly as the plain loop does; what prevents a capture is found and said."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import deepnet as dn
from deepnet.backend import Ops, to_host
from deepnet.backend.graphs import CheckedGraphs, StepGraphs
from deepnet.backend.numpy_ops import NumpyOps
from deepnet.callbacks import Callback
from deepnet.checkpoint import Checkpointer
from deepnet.layers import BatchNorm, Dropout, Layer
from deepnet.training import captured


def _data(n: int = 300, d: int = 12, k: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((n, d), dtype=np.float32), rng.integers(0, k, n)


def _net(ops: Ops, opt: dn.Optimizer, *, extra: tuple = (), loss: str = "xent", seed: int = 3) -> dn.Network:
    layers = [dn.Dense(12, 16), dn.ReLU(), *extra, dn.Dense(16, 4)]
    return dn.Network(layers, seed=seed, backend=ops, loss=loss, optimizer=opt)


def _weights(net: dn.Network) -> dict[str, np.ndarray]:
    return {k: to_host(v) for k, v in net.get_weights().items()}


def _same_run(ops: Ops, make_opt, *, extra=lambda: (), graphs: str = "on", **fit) -> tuple[dict, dict]:
    X, y = _data()
    runs = []
    for mode in ("off", graphs):
        net = _net(ops, make_opt(), extra=extra())
        h = net.fit(X, y, **{"epochs": 2, "batch_size": 32, **fit}, graphs=mode)
        runs.append((_weights(net), {k: v for k, v in h.history.items() if k != "time"}, net))
    (w0, h0, n0), (w1, h1, n1) = runs
    if isinstance(ops.graphs, CheckedGraphs):
        # the captured products go through (emulated) cuBLAS, the eager ones through matmul:
        # the same products, rounded differently, over 20 steps of float32
        for k in w0:
            np.testing.assert_allclose(w1[k], w0[k], rtol=1e-5, atol=1e-6, err_msg=k)
        assert h0.keys() == h1.keys()
        for k in h0:
            np.testing.assert_allclose(h1[k], h0[k], rtol=1e-5, atol=2 / 300 if "accuracy" in k else 0, err_msg=k)
    else:
        for k in w0:
            np.testing.assert_array_equal(w0[k], w1[k], err_msg=k)
        assert h0 == h1
    assert n0.step_count == n1.step_count and n0.optimizer.iterations == n1.optimizer.iterations
    return h0, h1


OPTIMIZERS = {
    "sgd": lambda: dn.SGD(0.1),
    "momentum": lambda: dn.SGD(0.05, momentum=0.9, nesterov=True),
    "adam": lambda: dn.Adam(1e-2),
    "adamw": lambda: dn.AdamW(1e-2, weight_decay=0.1),
    "rmsprop": lambda: dn.RMSProp(1e-3),
    "adam-clipped": lambda: dn.Adam(1e-2, clip_norm=0.5, max_norm=2.0, weight_decay=1e-3),
}


@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
def test_captured_step_trains_exactly_as_the_plain_loop(backend, opt):
    """Device batch index, device scalars (t, η, Adam's η_t and ε̂), per-batch device metrics and
    the eager short last batch (300 = 9·32 + 12): the same weights and history, bit for bit."""
    _same_run(backend, OPTIMIZERS[opt])


def test_dropout_and_batchnorm_in_the_captured_step(backend):
    """Dropout draws its masks in the same order; BatchNorm updates its running statistics in place.
    (SGD: Adam's first steps are a smoothed sign of g, which turns a rounding difference of
    the emulated cuBLAS products on cupy-shaped into a full step.)"""
    _same_run(backend, lambda: dn.SGD(0.05, momentum=0.9), extra=lambda: (BatchNorm(16), Dropout(0.3)))


@pytest.mark.parametrize("shuffle", [True, False])
def test_whole_epoch_graph_trains_exactly_as_the_plain_loop(backend, shuffle):
    _same_run(backend, lambda: dn.Adam(1e-2), graphs="epoch", shuffle=shuffle, epochs=3)


def test_captured_step_with_rows_and_validation_split(rng):
    """A run on some rows of X (the CLI's validation split by indices) gathers through both orders."""
    X, y = _data(400)
    rows, vrows = np.arange(0, 400, 2)[:150], np.arange(1, 400, 2)[:50]
    out = []
    for mode in ("off", "on"):
        net = _net(NumpyOps(), dn.Adam(1e-2))
        trainer = dn.training.Trainer(net, epochs=2, batch_size=16, graphs=mode, rows=rows,
                                      validation_data=(X, y), validation_rows=vrows)
        h = trainer.fit(X, y)
        out.append((_weights(net), {k: v for k, v in h.history.items() if k != "time"}))
    for k in out[0][0]:
        np.testing.assert_array_equal(out[0][0][k], out[1][0][k])
    assert out[0][1] == out[1][1]


def test_float64_and_sum_of_squares_batch_one():
    """The seed's setting: batch 1, sum of squares, SGD; float64 parameters."""
    X, y = _data(40)
    res = []
    for mode in ("off", "on"):
        net = dn.Network([dn.Dense(12, 8), dn.Sigmoid(), dn.Dense(8, 4), dn.Sigmoid()], seed=0, backend=NumpyOps(),
                         loss="sse", optimizer=dn.SGD(0.1), dtype="float64")
        net.fit(X, y, epochs=2, batch_size=1, graphs=mode)
        res.append(_weights(net))
    for k in res[0]:
        np.testing.assert_array_equal(res[0][k], res[1][k])


class _LRByBatch(Callback):
    """A per-batch schedule: η changes between replays and must reach the device."""

    def on_batch_begin(self, net, step, logs):
        net.optimizer.lr = 0.01 / (1 + 0.1 * step)

    def on_batch_end(self, net, step, logs):
        self.losses = getattr(self, "losses", []) + [float(to_host(logs["loss"]))]


def test_batch_callbacks_run_between_replays_with_a_copy_of_the_loss():
    X, y = _data()
    seen = []
    for mode in ("off", "on"):
        cb = _LRByBatch()
        net = _net(NumpyOps(), dn.Adam(1e-2))
        net.fit(X, y, epochs=2, batch_size=32, graphs=mode, callbacks=[cb])
        seen.append((_weights(net), cb.losses))
    assert seen[0][1] == seen[1][1] and len(seen[1][1]) == 20
    for k in seen[0][0]:
        np.testing.assert_array_equal(seen[0][0][k], seen[1][0][k])


def test_epoch_graph_with_batch_callbacks_is_refused(tmp_path):
    X, y = _data()
    with pytest.raises(ValueError, match="callbacks run at every batch, between the steps of an epoch graph: "
                                         r"_LRByBatch, checkpoints every 4 steps \(use graphs='on'"):
        _net(NumpyOps(), dn.Adam()).fit(X, y, graphs="epoch", callbacks=[_LRByBatch()],
                                        checkpoint=Checkpointer(tmp_path, every_steps=4))


def test_resume_inside_an_epoch_with_the_captured_step(tmp_path):
    """Stopped at batch 4 of epoch 1 and resumed: the same weights as one uninterrupted run."""
    X, y = _data()

    class StopAt(Callback):
        def on_batch_end(self, net, step, logs):
            if step == 14:
                net.stop_training = True

    ref = _net(NumpyOps(), dn.Adam(1e-2))
    ref.fit(X, y, epochs=2, batch_size=32, graphs="on")
    net = _net(NumpyOps(), dn.Adam(1e-2))
    net.fit(X, y, epochs=2, batch_size=32, graphs="on", callbacks=[StopAt()], checkpoint=tmp_path)
    again = _net(NumpyOps(), dn.Adam(1e-2), seed=99)
    again.fit(X, y, epochs=2, batch_size=32, graphs="on", checkpoint=tmp_path, resume=True)
    w0, w1 = _weights(ref), _weights(again)
    for k in w0:
        np.testing.assert_array_equal(w0[k], w1[k])


# ---------------------------------------------------------------------- what prevents a capture
class _Capturing(StepGraphs):
    """Pretends to capture (as CUDA does), running the step's Python each time: the "auto" path."""

    captures = True


class _CapturingOps(NumpyOps):
    """NumPy as a GPU backend looks to the loop: it captures, and reads back are not cheap."""

    graphs_type = _Capturing
    cheap_sync = False


class _Rebinds(Layer):
    """Keeps a running sum by rebinding an attribute: a replay would read the first array forever."""

    def __init__(self) -> None:
        super().__init__()
        self.total = None

    def forward(self, x, training=False):
        s = self.ops.xp.sum(x, axis=0)
        if training:
            self.total = s if self.total is None else self.total + s
        self._cache = True
        return x

    def backward(self, grad_output, need_input_grad=True):
        return grad_output


class _Counts(Layer):
    """Counts steps in a Python number (frozen in a graph)."""

    def __init__(self) -> None:
        super().__init__()
        self.steps = 0

    def forward(self, x, training=False):
        if training:
            self.steps += 1
        self._cache = True
        return x * 1.0

    def backward(self, grad_output, need_input_grad=True):
        return grad_output


class _Eager(Layer):
    capturable = False

    def forward(self, x, training=False):
        self._cache = True
        return x

    def backward(self, grad_output, need_input_grad=True):
        return grad_output


@pytest.fixture
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(captured, "_WARNED", set())


@pytest.mark.parametrize("layer, what", [(_Rebinds, "replaced its 'total'"), (_Counts, "replaced its 'steps'")])
def test_a_layer_that_rebinds_state_is_found_at_the_warm_up(layer, what, fresh_warnings):
    X, y = _data()
    with pytest.raises(dn.BackendError, match=what):
        _net(NumpyOps(), dn.Adam(), extra=(layer(),)).fit(X, y, batch_size=32, graphs="on")
    # graphs="auto" on a backend that captures: said once, then the same training eagerly
    ref = _net(NumpyOps(), dn.Adam(), extra=(layer(),))
    ref.fit(X, y, epochs=2, batch_size=32, graphs="off")
    net = _net(_CapturingOps(), dn.Adam(), extra=(layer(),))
    with pytest.warns(captured.GraphCaptureWarning, match=what):
        net.fit(X, y, epochs=2, batch_size=32)
    w0, w1 = _weights(ref), _weights(net)
    for k in w0:
        np.testing.assert_array_equal(w0[k], w1[k])


def test_obstacles_are_named(fresh_warnings):
    X, y = _data()
    with pytest.raises(ValueError, match=r"layer 2 \(_Eager\) sets capturable = False"):
        _net(NumpyOps(), dn.Adam(), extra=(_Eager(),)).fit(X, y, graphs="on")
    with pytest.raises(ValueError, match="check_finite='skip'"):
        _net(NumpyOps(), dn.Adam()).fit(X, y, graphs="on", check_finite="skip")

    class MyAdam(dn.Adam):
        def update(self, w, g, state, ops, lr):
            super().update(w, g, state, ops, lr)

    with pytest.raises(ValueError, match="optimizer MyAdam overrides"):
        _net(NumpyOps(), MyAdam()).fit(X, y, graphs="on")

    class DeclaredAdam(MyAdam):
        capturable = True

    assert DeclaredAdam().can_capture() and not MyAdam().can_capture() and dn.RMSProp().can_capture()
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        for _ in range(2):
            _net(_CapturingOps(), dn.Adam(), extra=(_Eager(),)).fit(X, y, batch_size=32)
    said = [w for w in got if issubclass(w.category, captured.GraphCaptureWarning)]
    assert len(said) == 1 and "capturable = False" in str(said[0].message)


def test_auto_without_graphs_is_the_plain_loop_and_says_nothing():
    X, y = _data()
    net = _net(NumpyOps(), dn.Adam())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trainer = dn.training.Trainer(net, epochs=1, batch_size=32)
        trainer.fit(X, y)
    assert type(trainer.strategy).__name__ == "PlainStep"


def test_bad_graphs_argument():
    X, y = _data()
    with pytest.raises(ValueError, match="graphs must be one of 'auto', 'on', 'off', 'epoch', got 'yes'"):
        _net(NumpyOps(), dn.Adam()).fit(X, y, graphs="yes")


# ---------------------------------------------------------------------- the CuPy-shaped capture
class _MatmulLayer(Layer):
    """y = x·x̄ᵀ-free identity that still calls cupy.matmul: cuBLAS, refused under capture."""

    def forward(self, x, training=False):
        xp = self.ops.xp
        self._cache = True
        return xp.matmul(x, xp.eye(x.shape[1], dtype=x.dtype))

    def backward(self, grad_output, need_input_grad=True):
        return grad_output


class _ReadsBack(Layer):
    """Reads a value back to the host every step (a sync: refused under capture)."""

    def forward(self, x, training=False):
        self._cache = True
        return x * 1.0 if float(self.ops.xp.sum(x)) >= 0 else x

    def backward(self, grad_output, need_input_grad=True):
        return grad_output


def _shaped(**kw):
    shaped = pytest.importorskip("deepnet.backend.cupy_shaped")
    try:
        return shaped.FusedCupyShapedOps(**kw)
    except dn.BackendError as err:
        pytest.skip(str(err))


@pytest.mark.cupy_shaped
@pytest.mark.parametrize("layer, what", [(_MatmulLayer, "calling cuBLAS API during stream capture"),
                                         (_ReadsBack, "cudaErrorStreamCaptureUnsupported")])
def test_what_cuda_refuses_during_capture_is_found_on_the_shaped_backend(layer, what, fresh_warnings):
    X, y = _data()
    with pytest.raises(dn.BackendError, match=what):
        _net(_shaped(), dn.Adam(), extra=(layer(),)).fit(X, y, batch_size=32, graphs="on")

    class Capturing(CheckedGraphs):
        captures = True

    ops = _shaped()
    ops.graphs = Capturing(ops)
    ref = _net(_shaped(), dn.SGD(0.1), extra=(layer(),))
    ref.fit(X, y, epochs=2, batch_size=32, graphs="off")
    net = _net(ops, dn.SGD(0.1), extra=(layer(),))
    with pytest.warns(captured.GraphCaptureWarning, match=what):
        net.fit(X, y, epochs=2, batch_size=32)        # graphs="auto": said once, then eagerly
    w0, w1 = _weights(ref), _weights(net)
    for k in w0:
        np.testing.assert_allclose(w1[k], w0[k], rtol=1e-6, atol=1e-7)


@pytest.mark.cupy_shaped
def test_captured_run_reads_and_uploads_per_epoch_not_per_step():
    """Host reads and uploads of a captured run do not grow with the number of batches."""
    counts = []
    for n in (320, 1280):
        ops = _shaped()
        X, y = _data(n)
        Xd, yd = dn.to_device(X, ops), dn.to_device(y, ops, dtype="int64")
        net = _net(ops, dn.Adam(1e-2), extra=(Dropout(0.2),))
        ops.xp.host_syncs.reset()
        net.fit(Xd, yd, epochs=2, batch_size=32, graphs="on", check_finite="off")
        counts.append((ops.xp.host_syncs.count, ops.xp.host_syncs.uploads))
    assert counts[0] == counts[1], counts


def test_a_nan_loss_stops_the_captured_step_before_its_update_where_reads_are_cheap():
    """check_finite='raise' on NumPy reads each step's loss: the static step does too, naming the batch."""
    X, y = _data()
    X[200] = 3e38                  # overflows to inf, then NaN: row 200 is in batch 7 (32 rows each, in order)
    for mode in ("off", "on"):
        net = _net(NumpyOps(), dn.SGD(0.1))
        with pytest.raises(dn.NonFiniteError, match="epoch 1, batch 7 .step 7."), np.errstate(all="ignore"):
            net.fit(X, y, batch_size=32, shuffle=False, graphs=mode)


class _CountingGraphs(StepGraphs):
    """Counts captures (each a unit of ``steps`` steps)."""

    captures = True

    def __init__(self, ops):
        super().__init__(ops)
        self.units = []

    def capture(self, fn, steps=1, memory=None):
        self.units.append(steps)
        return super().capture(fn, steps, memory)


class _CountingOps(NumpyOps):
    graphs_type = _CountingGraphs
    cheap_sync = False


def test_epoch_graphs_hold_at_most_epoch_chunk_steps(monkeypatch):
    """graphs="epoch": runs of ≤ EPOCH_CHUNK steps, one graph each, the device index carrying on."""
    monkeypatch.setattr(captured, "EPOCH_CHUNK", 4)
    X, y = _data(320)                               # 10 full batches of 32: runs of 10 // 3 = 3 steps
    ref = _net(NumpyOps(), dn.Adam(1e-2))
    ref.fit(X, y, epochs=3, batch_size=32, graphs="off")
    ops = _CountingOps()
    net = _net(ops, dn.Adam(1e-2))
    net.fit(X, y, epochs=3, batch_size=32, graphs="epoch", check_finite="off")
    assert ops.graphs.units == [1, 3]               # the step, then one graph of 3 steps, replayed
    w0, w1 = _weights(ref), _weights(net)
    for k in w0:
        np.testing.assert_array_equal(w0[k], w1[k])


class _MomentumSchedule(Callback):
    def on_epoch_begin(self, net, epoch, logs):
        net.optimizer.momentum = 0.5 if epoch < 2 else 0.9


def test_a_setting_a_graph_froze_that_changes_is_captured_again():
    """A graph freezes μ, dropout p, ...: when one changes, the step is captured again."""
    X, y = _data()
    ops = _CountingOps()
    net = _net(ops, dn.SGD(0.05, momentum=0.5), extra=(Dropout(0.2),))
    net.fit(X, y, epochs=4, batch_size=32, graphs="on", check_finite="off", callbacks=[_MomentumSchedule()])
    assert ops.graphs.units == [1, 1]              # captured in epoch 1, again when μ changed in epoch 3
    net.layers[2].p = 0.3
    net.fit(X, y, epochs=1, batch_size=32, graphs="on", check_finite="off", callbacks=[_MomentumSchedule()])
    assert ops.graphs.units == [1, 1, 1]           # a new run captures its own graph


def test_precision_is_the_running_threads_only():
    """fit(precision="bf16") changes the products of its own thread (and context), nobody else's."""
    import threading

    X, y = _data()
    ops = NumpyOps()
    seen = {}

    class Look(Callback):
        def on_epoch_end(self, net, epoch, logs):
            seen["here"] = ops.products.precision
            t = threading.Thread(target=lambda: seen.__setitem__("other thread", ops.products.precision))
            t.start()
            t.join()

    _net(ops, dn.Adam()).fit(X, y, epochs=1, batch_size=32, precision="bf16", callbacks=[Look()])
    assert seen == {"here": "bf16", "other thread": "float32"} and ops.products.precision == "float32"


@pytest.mark.cupy_shaped
def test_a_capture_refused_in_backward_retries_the_step_from_clean_gradients(fresh_warnings):
    """The refusal comes after some layers' backward wrote (marked) their gradients: the eager
    retry must not add to them."""

    class ReadsInBackward(Layer):
        def forward(self, x, training=False):
            self._cache = True
            return x * 1.0

        def backward(self, grad_output, need_input_grad=True):
            return grad_output * 1.0 if float(self.ops.xp.sum(grad_output)) == float("inf") else grad_output

    class Capturing(CheckedGraphs):
        captures = True

    X, y = _data()
    ref = _net(_shaped(), dn.SGD(0.1), extra=(ReadsInBackward(),))
    ref.fit(X, y, epochs=2, batch_size=32, graphs="off")
    ops = _shaped()
    ops.graphs = Capturing(ops)
    net = _net(ops, dn.SGD(0.1), extra=(ReadsInBackward(),))
    with pytest.warns(captured.GraphCaptureWarning, match="cudaErrorStreamCaptureUnsupported"):
        net.fit(X, y, epochs=2, batch_size=32, check_finite="off")
    w0, w1 = _weights(ref), _weights(net)
    for k in w0:
        np.testing.assert_allclose(w1[k], w0[k], rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------- deepnet's cuBLAS handle and the capture
class _Capturing(CheckedGraphs):
    """The shaped capture, taken by graphs="auto" as a GPU's would be."""

    captures = True


def _failing_cublas(how: str):
    """What the captured products would call: a cuBLAS whose handle cannot be created (the status
    cublasCreate returns when CUDA cannot initialise), or libcublas that cannot be loaded (None)."""
    from deepnet.backend.cublas_shaped import NOT_INITIALIZED, FakeCublasLib

    class NoHandle(FakeCublasLib):
        def cublasCreate_v2(self, handle_ptr):      # noqa: N802  (cuBLAS's names)
            return NOT_INITIALIZED

    return NoHandle() if how == "create" else None


CUBLAS_FAILURES = {"create": r"cublasCreate_v2 failed: expected CUBLAS_STATUS_SUCCESS, got "
                              r"CUBLAS_STATUS_NOT_INITIALIZED",
                   "load": r"cuBLAS \(libcublas\) is needed .* but was not found"}


def _products_with(monkeypatch, ops, how):
    from deepnet.backend import cublas
    from deepnet.backend.cupy_products import CupyProducts

    def not_found():
        raise dn.BackendError("cuBLAS (libcublas) is needed for captured or mixed-precision products but was not "
                              "found (cuda.pathfinder: no libcublas.so.13)")
    monkeypatch.setattr(cublas, "load_cublas", not_found)
    ops.products = CupyProducts(ops.xp, lib=_failing_cublas(how))
    return ops


def _companion(kind, ops):
    """The graph companion a GPU run uses (CudaGraphs, here over the shaped namespace: capture
    records nothing and a replay is not run) or the shaped backend's own checked capture."""
    from deepnet.backend.graphs import CudaGraphs
    ops.graphs = CudaGraphs(ops) if kind == "cuda" else _Capturing(ops)
    return ops


@pytest.mark.cupy_shaped
@pytest.mark.parametrize("kind", ["cuda", "checked"])
@pytest.mark.parametrize("how", sorted(CUBLAS_FAILURES))
def test_auto_trains_without_a_graph_when_deepnets_cublas_handle_fails(monkeypatch, fresh_warnings, how, kind):
    """graphs="auto" falls back to the plain loop, saying why once; "on" and "epoch" raise naming
    the cause (a float32 run needs cuBLAS only for the captured products)."""
    X, y = _data()
    for mode in ("on", "epoch"):
        ops = _companion(kind, _products_with(monkeypatch, _shaped(), how))
        with pytest.raises(dn.BackendError, match=rf"fit\(graphs='{mode}'\): .*{CUBLAS_FAILURES[how]}"):
            _net(ops, dn.Adam()).fit(X, y, epochs=2, batch_size=32, graphs=mode)
    ref = _net(_shaped(), dn.Adam())
    ref.fit(X, y, epochs=2, batch_size=32, graphs="off")
    ops = _companion(kind, _products_with(monkeypatch, _shaped(), how))
    net = _net(ops, dn.Adam())
    with pytest.warns(captured.GraphCaptureWarning, match=rf"cuBLAS handle.*{CUBLAS_FAILURES[how]}"):
        net.fit(X, y, epochs=2, batch_size=32)
    assert net.step_count == ref.step_count
    w0, w1 = _weights(ref), _weights(net)
    for k in w0:
        np.testing.assert_allclose(w1[k], w0[k], rtol=1e-6, atol=1e-7)


def _logged(monkeypatch, ops):
    """Log, in order, each ``begin_capture`` (with its stream) and each product deepnet's cuBLAS
    handle computes (its function, the stream it is bound to, whether that stream was capturing)."""
    from deepnet.backend.cublas_shaped import FakeCublasLib
    from deepnet.backend.cupy_products import CupyProducts

    log = []
    xp = ops.xp

    def product(name):
        def call(self, handle, *args):
            log.append((name, self.handles[handle]["stream"], xp.cuda.get_current_stream().is_capturing()))
            return getattr(FakeCublasLib, name)(self, handle, *args)
        return call

    lib = type("LoggedCublas", (FakeCublasLib,), {n: product(n) for n in ("cublasSgemm_v2", "cublasDgemm_v2",
                                                                         "cublasGemmEx")})()
    ops.products = CupyProducts(xp, lib=lib)
    begin = xp.cuda.Stream.begin_capture

    def logged_begin(stream, *args, **kw):
        log.append(("begin_capture", stream.ptr, False))
        return begin(stream, *args, **kw)

    monkeypatch.setattr(xp.cuda.Stream, "begin_capture", logged_begin)
    return log


def _warmed_before_capture(log, function):
    first = next(i for i, entry in enumerate(log) if entry[0] == "begin_capture")
    stream = log[first][1]
    assert stream != 0
    return (function, stream, False) in log[:first]


@pytest.mark.cupy_shaped
def test_a_product_runs_through_deepnets_cublas_handle_before_the_step_is_captured(monkeypatch):
    """cuBLAS initialises a handle's state lazily, at its first call on a stream: that call is made
    eagerly, on the capturing stream, before the capture begins (a float32 run's eager steps use
    cupy.matmul, so without it the handle's first product would be inside the graph)."""
    ops = _shaped()
    log = _logged(monkeypatch, ops)
    X, y = _data()
    _net(ops, dn.Adam()).fit(X, y, epochs=1, batch_size=32, graphs="on")
    assert _warmed_before_capture(log, "cublasSgemm_v2"), log[:8]


@pytest.mark.cupy_shaped
@pytest.mark.parametrize("precision, function", [("float32", "cublasSgemm_v2"), ("bf16", "cublasGemmEx")])
def test_cuda_graphs_warm_cublas_up_on_the_capture_stream_then_capture(monkeypatch, precision, function):
    """The GPU companion (CudaGraphs), run over the shaped namespace: the warm-up product is at the
    run's precision, on the stream that then captures; a handle that fails is a CaptureError."""
    from deepnet.backend import cupy_shaped
    from deepnet.backend.graphs import CaptureError, CudaGraphs

    monkeypatch.setattr(cupy_shaped._Graph, "launch", lambda self, stream=None: None)   # no replay on the CPU
    ops = _shaped()
    log = _logged(monkeypatch, ops)
    graphs = CudaGraphs(ops)
    x, w = ops.from_host(np.ones((4, 3), np.float32)), ops.from_host(np.ones((5, 3), np.float32))
    with ops.using_products(ops.products.with_precision(precision)):
        graphs.capture(lambda: ops.linear(x, w))
    assert _warmed_before_capture(log, function), log
    assert log[-1][0] == function and log[-1][2], "the step's own product is captured"
    for how in CUBLAS_FAILURES:
        ops = _products_with(monkeypatch, _shaped(), how)
        with pytest.raises(CaptureError, match=CUBLAS_FAILURES[how]):
            CudaGraphs(ops).capture(lambda: None)
