"""Convolution and pooling layers (deepnet/layers/conv.py) on every backend: forward against
PyTorch's functional ops (float64, CPU), float64 gradient checks with the public
``check_layer``, the max-pool tie rule, one-line errors, per-sample output shapes and
get_config round trips.  Shapes are tiny: the file runs in seconds."""

from __future__ import annotations

import json

import numpy as np
import pytest

import deepnet as dn
from deepnet import check_layer, to_device, to_host
from deepnet.errors import ShapeError
from deepnet.layers.conv import AvgPool2D, Conv2D, Flatten, GlobalAvgPool2D, MaxPool2D, Reshape

torch = pytest.importorskip("torch")
F = torch.nn.functional


@pytest.fixture(autouse=True, scope="module")
def _torch_one_thread():
    """PyTorch's two OpenMP threads spin on these tiny products: 1.2-1.5 s for one gradient check
    on a busy 2-core machine against 0.04 s with one thread (the results are the same)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

# name -> (Conv2D arguments, input shape (N, C, H, W))
CONV = {
    "k3": (dict(in_channels=2, out_channels=3, kernel_size=3), (1, 2, 7, 5)),
    "k3-s2-p1-b3": (dict(in_channels=2, out_channels=3, kernel_size=3, stride=2, padding=1), (3, 2, 7, 5)),
    "k3-same": (dict(in_channels=2, out_channels=2, kernel_size=3, padding="same"), (1, 2, 5, 4)),
    "k2x3-same": (dict(in_channels=1, out_channels=2, kernel_size=[2, 3], padding="same"), (3, 1, 5, 4)),
    "k3-d2-same": (dict(in_channels=2, out_channels=2, kernel_size=3, padding="same", dilation=2), (1, 2, 7, 5)),
    "k3-d2-p1-s2": (dict(in_channels=1, out_channels=2, kernel_size=3, stride=2, padding=1, dilation=2),
                    (1, 1, 7, 5)),
    "k1-g2": (dict(in_channels=4, out_channels=6, kernel_size=1, groups=2), (3, 4, 3, 2)),
    "k3-g2-s2-nobias": (dict(in_channels=4, out_channels=2, kernel_size=3, stride=2, padding=1, groups=2,
                             bias=False), (1, 4, 7, 5)),
    "k5-p2": (dict(in_channels=1, out_channels=2, kernel_size=5, padding=2), (1, 1, 7, 5)),
    "k2x3-s21-p10-valid": (dict(in_channels=2, out_channels=2, kernel_size=[2, 3], stride=[2, 1],
                                padding=[1, 0]), (3, 2, 7, 5)),
    "valid": (dict(in_channels=1, out_channels=1, kernel_size=[3, 2], padding="valid", init="glorot"), (1, 1, 4, 3)),
}

# name -> (layer factory, input shape, PyTorch reference of the forward pass)
POOLS = {
    "max2": (lambda: MaxPool2D(2), (3, 2, 7, 5), lambda x: F.max_pool2d(x, 2)),
    "max3-s2-p1": (lambda: MaxPool2D(3, stride=2, padding=1), (1, 2, 7, 5),
                   lambda x: F.max_pool2d(x, 3, stride=2, padding=1)),
    "max2x3-s1-p1": (lambda: MaxPool2D([2, 3], stride=1, padding=1), (1, 1, 5, 4),
                     lambda x: F.max_pool2d(x, (2, 3), stride=1, padding=1)),
    "avg2": (lambda: AvgPool2D(2), (3, 2, 7, 5), lambda x: F.avg_pool2d(x, 2)),
    "avg3-s2-p1": (lambda: AvgPool2D(3, stride=2, padding=1), (1, 2, 7, 5),
                   lambda x: F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=True)),
    "avg2x3-s21-p01": (lambda: AvgPool2D([2, 3], stride=[2, 1], padding=[0, 1]), (1, 1, 5, 4),
                       lambda x: F.avg_pool2d(x, (2, 3), stride=(2, 1), padding=(0, 1))),
    "gap": (GlobalAvgPool2D, (3, 2, 7, 5), lambda x: x.mean(dim=(2, 3))),
    "flatten": (Flatten, (3, 2, 3, 2), lambda x: x.reshape(x.shape[0], -1)),
    "reshape": (lambda: Reshape([2, 3, 2]), (3, 12), lambda x: x.reshape(x.shape[0], 2, 3, 2)),
}


def _torch_conv(layer: Conv2D, x: np.ndarray) -> np.ndarray:
    p = {k: torch.from_numpy(to_host(v.data).astype(np.float64)) for k, v in layer.parameters().items()}
    pad = layer.padding if isinstance(layer.padding, str) else tuple(layer.padding)
    return F.conv2d(torch.from_numpy(x), p["weight"], p.get("bias"), stride=tuple(layer.stride), padding=pad,
                    dilation=tuple(layer.dilation), groups=layer.groups).numpy()


def _conv(name: str) -> Conv2D:
    layer = Conv2D(**CONV[name][0])
    layer.initialize(np.random.default_rng(7))
    return layer


def _x(shape, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape)


# ---------------------------------------------------------------- forward against PyTorch
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
@pytest.mark.parametrize("name", sorted(CONV))
def test_conv_forward_matches_torch(backend, name):
    layer = _conv(name)
    x = _x(CONV[name][1]).astype(np.float32)
    y = layer.forward(to_device(x), training=False)
    ref = _torch_conv(layer, x.astype(np.float64))
    assert to_host(y).dtype == np.float32 and tuple(y.shape) == ref.shape
    assert tuple(y.shape[1:]) == layer.output_shape(tuple(x.shape[1:]))
    np.testing.assert_allclose(to_host(y), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(POOLS))
def test_pool_and_shape_forward_matches_torch(backend, name):
    make, shape, ref = POOLS[name]
    layer = make()
    x = _x(shape).astype(np.float32)
    y = layer.forward(to_device(x), training=False)
    want = ref(torch.from_numpy(x.astype(np.float64))).numpy()
    assert to_host(y).dtype == np.float32 and tuple(y.shape) == want.shape
    assert tuple(y.shape[1:]) == layer.output_shape(tuple(x.shape[1:]))
    np.testing.assert_allclose(to_host(y), want, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- gradients (float64, finite differences)
@pytest.mark.parametrize("name", sorted(CONV))
def test_conv_gradient_check(backend, name):
    layer = _conv(name)
    report = check_layer(layer, _x(CONV[name][1], seed=1), max_checks=40)
    assert set(report.checked) == {"input", *layer.parameters()}


@pytest.mark.parametrize("name", sorted(POOLS))
def test_pool_and_shape_gradient_check(backend, name):
    make, shape, _ = POOLS[name]
    report = check_layer(make(), _x(shape, seed=1), max_checks=40)
    assert set(report.checked) == {"input"}


def test_small_network_gradient_check(backend):
    """Reshape → Conv2D → MaxPool2D → Flatten, backward chained by hand as Network does."""
    layers = [Reshape([2, 5, 4]), Conv2D(2, 3, 3, padding=1, dilation=[1, 2]), MaxPool2D(2, padding=1), Flatten()]
    layers[1].initialize(np.random.default_rng(0))
    x = to_device(_x((2, 40), seed=3).astype(np.float32))
    h = x
    for layer in layers:
        h = layer.forward(h, training=True)
    assert tuple(h.shape) == (2, 3 * 3 * 2)
    g = to_device(np.ones((2, 18), np.float32))
    for layer in reversed(layers):
        g = layer.backward(g)
    assert tuple(g.shape) == (2, 40) and to_host(g).dtype == np.float32


@pytest.mark.parametrize("name", ["numpy", pytest.param("cupy-shaped", marks=pytest.mark.cupy_shaped)])
def test_captured_training_step_equals_eager(name):
    """Every layer here is capturable: fit(graphs="on") checks the step for host reads and state
    rebound between steps (on CuPy-shaped, capture refuses host reads) and trains as eagerly."""
    def net():
        with dn.use_backend(name):
            return dn.Network([Reshape([1, 6, 6]), Conv2D(1, 2, 3, padding="same"), dn.ReLU(),
                               MaxPool2D(2, padding=1), Conv2D(2, 4, 2, groups=2), AvgPool2D(2, stride=1),
                               GlobalAvgPool2D(), dn.Dense(4, 3)], seed=0)
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(32, 36)).astype(np.float32), np.arange(32) % 3
    weights = []
    for mode in ("off", "on"):
        n = net()
        n.fit(X, y, epochs=1, batch_size=8, loss="xent", optimizer=dn.Adam(0.01), graphs=mode)
        weights.append({k: to_host(p.data) for k, p in n.parameters().items()})
    for k in weights[0]:
        np.testing.assert_allclose(weights[1][k], weights[0][k], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- training-pass contract
@pytest.mark.parametrize("name", ["k3-s2-p1-b3", "k1-g2"])
def test_conv_gradients_accumulate_and_skip_input_grad(backend, name):
    layer = _conv(name)
    x = to_device(_x(CONV[name][1]).astype(np.float32))
    y = layer.forward(x, training=True)
    dy = _x(tuple(y.shape), seed=2).astype(np.float32)
    layer.zero_grad()
    assert tuple(layer.backward(to_device(dy)).shape) == tuple(x.shape)
    once = {k: to_host(p.grad).copy() for k, p in layer.parameters().items()}
    assert layer.backward(to_device(dy), need_input_grad=False) is None
    for k, p in layer.parameters().items():
        assert to_host(p.grad).dtype == np.float32
        np.testing.assert_allclose(to_host(p.grad), 2 * once[k], rtol=1e-5, atol=1e-6)


LAYERS = {"conv": lambda: _conv("k3-s2-p1-b3"), **{k: v[0] for k, v in POOLS.items()}}
SHAPES = {"conv": CONV["k3-s2-p1-b3"][1], **{k: v[1] for k, v in POOLS.items()}}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_float32_and_evaluation_keeps_nothing(backend, name):
    layer = LAYERS[name]()
    x = to_device(_x(SHAPES[name]).astype(np.float32))
    y = layer.forward(x, training=True)
    dx = layer.backward(to_device(np.ones(tuple(y.shape), np.float32)))
    assert to_host(y).dtype == np.float32 and to_host(dx).dtype == np.float32
    assert tuple(dx.shape) == tuple(x.shape)
    layer.forward(x, training=False)
    assert layer.cached is None
    with pytest.raises(RuntimeError, match="without a training forward"):
        layer.backward(to_device(np.ones(tuple(y.shape), np.float32)))


@pytest.mark.parametrize("name", ["conv", "max3-s2-p1", "avg2"])
def test_non_contiguous_input(name):
    layer = LAYERS[name]()
    wide = _x(SHAPES[name][:3] + (2 * SHAPES[name][3],)).astype(np.float32)
    x = wide[..., ::2]
    assert not x.flags.c_contiguous
    np.testing.assert_allclose(layer.forward(x), layer.forward(np.ascontiguousarray(x)), rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- max pooling's ties and padding
def test_max_pool_tie_goes_to_the_first_position_in_row_major_order(backend):
    x = np.array([[[[0.0, 5.0, 1.0, 1.0],
                    [5.0, 2.0, 1.0, 1.0]]]], np.float32)        # window 1: 5 at (0,1) and (1,0); window 2: all 1
    layer = MaxPool2D(2)
    y = layer.forward(to_device(x), training=True)
    assert to_host(y).tolist() == [[[[5.0, 1.0]]]]
    dx = to_host(layer.backward(to_device(np.array([[[[1.0, 2.0]]]], np.float32))))
    assert dx.tolist() == [[[[0.0, 1.0, 2.0, 0.0],
                             [0.0, 0.0, 0.0, 0.0]]]]


def test_max_pool_padding_never_wins(backend):
    x = -1.0 - np.arange(12, dtype=np.float32).reshape(1, 1, 3, 4)     # every pixel below the padding's 0
    layer = MaxPool2D(3, stride=1, padding=1)
    y = to_host(layer.forward(to_device(x), training=True))
    np.testing.assert_array_equal(y, F.max_pool2d(torch.from_numpy(x), 3, stride=1, padding=1).numpy())
    assert (y < 0).all()
    dx = to_host(layer.backward(to_device(np.ones((1, 1, 3, 4), np.float32))))
    assert dx[0, 0].tolist() == [[4.0, 2.0, 2.0, 0.0],                  # each window's top-left real pixel
                                 [2.0, 1.0, 1.0, 0.0],
                                 [0.0, 0.0, 0.0, 0.0]]


# ---------------------------------------------------------------- shapes and errors
def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("make, x_shape, match", [
    (lambda: Conv2D(2, 3, 3), (2, 10), r"^Conv2D expects NCHW images \(n, 2, H, W\), got an input of shape \(2, 10\)$"),
    (lambda: Conv2D(2, 3, 3), (1, 3, 5, 5), r"^Conv2D expects 2 input channels, got an input of shape \(1, 3, 5, 5\)$"),
    (lambda: Conv2D(1, 1, 5), (1, 1, 3, 6), r"^Conv2D: the 5x5 window is larger than the 3x6 image$"),
    (lambda: Conv2D(1, 1, 3, dilation=2, padding=1), (1, 1, 2, 3),
     r"^Conv2D: the 5x5 window is larger than the 2x3 image padded to 4x5$"),
    (lambda: MaxPool2D(4), (1, 1, 3, 8), r"^MaxPool2D: the 4x4 window is larger than the 3x8 image$"),
    (lambda: AvgPool2D(2), (4, 4), r"^AvgPool2D expects NCHW images \(n, C, H, W\), got an input of shape \(4, 4\)$"),
    (GlobalAvgPool2D, (2, 3, 4), r"^GlobalAvgPool2D expects NCHW images"),
    (Flatten, (3,), r"^Flatten expects a batch \(n, \.\.\.\) of at least 2 dimensions, got an input of shape \(3,\)$"),
    (lambda: Reshape([1, 2, 2]), (2, 5),
     r"^Reshape to \[1, 2, 2\] expects rows \(n, 4\), got an input of shape \(2, 5\)$"),
])
def test_wrong_input_is_a_one_line_shape_error(backend, make, x_shape, match):
    layer = make()
    if not layer.initialized:
        layer.initialize(np.random.default_rng(0))
    with pytest.raises(ShapeError, match=match) as err:
        layer.forward(to_device(np.zeros(x_shape, np.float32)))
    _one_line(err)


@pytest.mark.parametrize("make, match", [
    (lambda: Conv2D(4, 6, 3, groups=3), r"^Conv2D: groups=3 must divide in_channels=4 and out_channels=6$"),
    (lambda: Conv2D(4, 6, 3, groups=4), r"^Conv2D: groups=4 must divide in_channels=4 and out_channels=6$"),
    (lambda: Conv2D(1, 1, 3, stride=2, padding="same"),
     r"^Conv2D: padding='same' needs stride 1, got stride \[2, 2\]$"),
    (lambda: Conv2D(1, 1, 3, padding="full"), r"^Conv2D: padding must be 'same', 'valid', an int or a pair"),
    (lambda: Conv2D(1, 1, [3, 3, 3]), r"^Conv2D: kernel_size must be an int >= 1 or a pair of them, got \[3, 3, 3\]$"),
    (lambda: Conv2D(1, 1, 0), r"^Conv2D: kernel_size must be an int >= 1"),
    (lambda: Conv2D(0, 1, 3), r"^Conv2D: in_channels must be a positive integer, got 0$"),
    (lambda: Conv2D(1, 1, 3, padding=-1), r"^Conv2D: padding must be an int >= 0"),
    (lambda: Conv2D(1, 1, 3, init="zeros"), r"^unknown initializer 'zeros'"),
    (lambda: MaxPool2D(2, padding=2), r"^MaxPool2D: padding \[2, 2\] must be at most half the pool size \[2, 2\]$"),
    (lambda: AvgPool2D(2, stride=0), r"^AvgPool2D: stride must be an int >= 1"),
    (lambda: Reshape([1, 0]), r"^Reshape: shape must be a non-empty list of positive ints, got \[1, 0\]$"),
])
def test_bad_settings_are_one_line_value_errors(make, match):
    with pytest.raises(ValueError, match=match) as err:
        make()
    _one_line(err)


def test_output_shape_per_sample():
    assert Conv2D(3, 8, 3).output_shape((3, 28, 28)) == (8, 26, 26)
    assert Conv2D(3, 8, [2, 4], padding="same").output_shape((3, 7, 5)) == (8, 7, 5)
    assert Conv2D(1, 4, 3, stride=2, padding=1, dilation=2).output_shape((1, 7, 5)) == (4, 3, 2)
    assert MaxPool2D(2).output_shape((8, 7, 5)) == (8, 3, 2)
    assert AvgPool2D(3, stride=1, padding=1).output_shape((2, 4, 4)) == (2, 4, 4)
    assert GlobalAvgPool2D().output_shape((8, 7, 5)) == (8,)
    assert Flatten().output_shape((8, 3, 2)) == (48,) and Flatten().output_shape((5,)) == (5,)
    assert Reshape([1, 28, 28]).output_shape((784,)) == (1, 28, 28)
    assert Reshape([1, 28, 28]).input_shape() == (784,) and Conv2D(1, 2, 3).input_shape() is None
    for layer, shape, match in [
        (Conv2D(3, 8, 3), (784,), r"^Conv2D expects per-sample images \(C, H, W\), got per-sample shape \(784,\): "
                                  r"put Reshape before it$"),
        (Conv2D(3, 8, 3), (1, 28, 28), r"^Conv2D expects 3 input channels, got per-sample shape \(1, 28, 28\)$"),
        (Conv2D(3, 8, 5), (3, 4, 4), r"^Conv2D: the 5x5 window is larger than the 4x4 image$"),
        (MaxPool2D(2), (8, 1, 5), r"^MaxPool2D: the 2x2 window is larger than the 1x5 image$"),
        (GlobalAvgPool2D(), (8,), r"^GlobalAvgPool2D expects per-sample images"),
        (Reshape([1, 28, 28]), (100,), r"^Reshape to \[1, 28, 28\] expects inputs of width 784, got per-sample shape "
                                       r"\(100,\)$"),
    ]:
        with pytest.raises(ShapeError, match=match) as err:
            layer.output_shape(shape)
        _one_line(err)


# ---------------------------------------------------------------- configuration
CONFIGURED = {
    **{f"conv-{k}": (lambda k=k: Conv2D(**CONV[k][0])) for k in CONV},
    "conv-tuple-args": lambda: Conv2D(2, 4, (3, 1), stride=(2, 1), padding=(1, 0), dilation=(1, 1), bias=False,
                                      groups=2, init="he_uniform"),
    "maxpool": lambda: MaxPool2D([2, 3], stride=[1, 2], padding=1),
    "maxpool-default-stride": lambda: MaxPool2D(3),
    "avgpool": lambda: AvgPool2D(2, padding=[1, 0]),
    "gap": GlobalAvgPool2D,
    "flatten": Flatten,
    "reshape": lambda: Reshape([1, 28, 28]),
}


@pytest.mark.parametrize("name", sorted(CONFIGURED))
def test_get_config_round_trip(name):
    layer = CONFIGURED[name]()
    layer.initialize(np.random.default_rng(0))
    cfg = layer.get_config()
    assert json.loads(json.dumps(cfg)) == cfg                   # plain data: lists, not tuples
    rebuilt = type(layer)(**cfg)
    rebuilt.initialize(np.random.default_rng(1))
    assert rebuilt.get_config() == cfg
    assert {k: p.shape for k, p in rebuilt.parameters().items()} == {k: p.shape for k, p in layer.parameters().items()}
    assert layer.check_config() == cfg and layer.check_config(trial=True) == cfg
    if hasattr(layer, "window"):
        assert rebuilt.window == layer.window


def test_conv_weight_shape_is_torchs():
    layer = Conv2D(4, 6, [3, 2], groups=2)
    layer.initialize(np.random.default_rng(0))
    torch_layer = torch.nn.Conv2d(4, 6, (3, 2), groups=2)
    assert {k: p.shape for k, p in layer.parameters().items()} == {
        k: tuple(p.shape) for k, p in torch_layer.named_parameters()}


def test_same_padding_puts_the_odd_pixel_at_the_bottom_right():
    w = Conv2D(1, 1, [2, 4], padding="same").window
    assert (w.pt, w.pb, w.pl, w.pr) == (0, 1, 1, 2)
    w = Conv2D(1, 1, 3, padding="same", dilation=2).window
    assert (w.pt, w.pb, w.pl, w.pr) == (2, 2, 2, 2)


def test_conv2d_in_chunks_is_the_same_convolution(backend):
    """When the patches of a batch would exceed max_patch_bytes, forward convolves chunks of
    samples and backward unfolds each chunk again: the same outputs and gradients (to rounding),
    with at most one chunk's patches alive."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 3, 6, 7))
    dy = rng.standard_normal((5, 4, 3, 4))
    out = {}
    for budget in (None, 2 * 27 * 12 * 8):               # 2 samples of 3·3·3 × 3·4 float64 patches per chunk
        with dn.use_backend(backend):
            layer = dn.Conv2D(3, 4, 3, stride=[2, 2], padding=1, groups=1)
            layer.to(backend, "float64")
            layer.initialize(np.random.default_rng(0))
            layer.keep_patches = True                        # the whole batch's patches kept, or chunks
            if budget is not None:
                layer.max_patch_bytes = budget
            y = layer.forward(dn.to_device(x, backend, dtype="float64"), training=True)
            cached = layer.cached
            dx = layer.backward(dn.to_device(dy, backend, dtype="float64"))
            out[budget] = (dn.to_host(y), dn.to_host(dx), {k: dn.to_host(p.grad) for k, p in layer.parameters().items()},
                           cached)
    (y0, dx0, g0, c0), (y1, dx1, g1, c1) = out[None], out[2 * 27 * 12 * 8]
    assert c0[2] is None and c1[0] is None and c1[2][1] == 2          # whole patches vs. chunks of 2 samples
    np.testing.assert_allclose(y1, y0, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx1, dx0, rtol=1e-12, atol=1e-12)
    for k in g0:
        np.testing.assert_allclose(g1[k], g0[k], rtol=1e-12, atol=1e-12)


def test_conv2d_keeps_its_input_not_its_patches_by_default(backend):
    """Training keeps x (backward unfolds it again), the same convolution as keeping colsᵀ."""
    rng = np.random.default_rng(6)
    x, dy = rng.standard_normal((3, 2, 6, 5)), rng.standard_normal((3, 4, 3, 3))
    out = []
    for keep in (False, True):
        with dn.use_backend(backend):
            layer = dn.Conv2D(2, 4, 3, stride=2, padding=1)
            layer.to(backend, "float64")
            layer.initialize(np.random.default_rng(0))
            layer.keep_patches = keep
            xd = dn.to_device(x, backend, dtype="float64")
            y = layer.forward(xd, training=True)
            cols_t, _, kept = layer.cached
            assert (cols_t is None and kept[0] is xd) if not keep else (kept is None and cols_t is not None)
            dx = layer.backward(dn.to_device(dy, backend, dtype="float64"))
            out.append([dn.to_host(a) for a in (y, dx, layer.parameters()["weight"].grad, layer.parameters()["bias"].grad)])
    for a, b in zip(*out):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_conv2d_in_chunks_passes_the_gradient_check():
    layer = dn.Conv2D(2, 3, 3, padding="same", groups=1)
    layer.max_patch_bytes = 2 * 18 * 20 * 8                  # chunks of 2 of the 3 samples: one full, one partial
    from deepnet.gradcheck import check_layer
    layer.to("numpy", "float64")
    layer.initialize(np.random.default_rng(1))
    check_layer(layer, np.random.default_rng(2).standard_normal((3, 2, 4, 5)))
