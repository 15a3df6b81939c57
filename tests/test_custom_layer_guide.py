"""The custom-layer guide is enough on its own: its code blocks run, in order, as one
program; and the idioms it documents work (``param.grad += g`` with lazy zeroing,
``param.data``, parameters kept as attributes, initialization tracked by the base class,
``get_config`` checked when a model is saved)."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import numpy as np
import pytest

import deepnet as dn
from deepnet import check_layer, to_device, to_host
from deepnet.io import ModelFileError, load_model, save_model

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "custom-layers.md"
FENCE = re.compile(r"^```([A-Za-z0-9_+-]*)[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def guide_blocks() -> list[tuple[str, int, str]]:
    """(language, first line, code) of every fenced block of the guide, in order."""
    text = GUIDE.read_text(encoding="utf-8")
    return [(m[1], text.count("\n", 0, m.start(2)) + 1, m[2]) for m in FENCE.finditer(text)]


# ---------------------------------------------------------------- the guide itself
def test_guide_code_blocks_run_in_order(tmp_path, monkeypatch, capsys):
    blocks = guide_blocks()
    assert all(lang in ("python", "text", "bash") for lang, _, _ in blocks), \
        f"label every code block of the guide: {[lang for lang, _, _ in blocks]}"
    code = [(line, src) for lang, line, src in blocks if lang == "python"]
    assert len(code) >= 6
    monkeypatch.chdir(tmp_path)                      # the guide saves circle.npz in the working folder
    namespace: dict = {"__name__": "custom_layers_guide"}
    for line, src in code:
        exec(compile(src, f"{GUIDE}:{line}", "exec"), namespace)
    out = capsys.readouterr().out
    assert "gradient check of Swish: passed" in out and "gradient check of Residual: passed" in out
    assert "layer contract of PlainConv(c_in=3, c_out=4, k=3) on numpy: passed" in out      # section 8, images
    assert (tmp_path / "circle.npz").is_file() and not (tmp_path / "shift.npz").exists()
    assert namespace["result"]["accuracy"] > 0.9
    for backend in ("numpy", "strict"):        # section 5: a layer taking integer inputs, through the harness
        assert f"layer contract of Embedding(n_tokens=10, dim=4, length=3) on {backend}: passed" in out
    assert out.count("gradient check of Huber: passed") == 2                        # section 9: a loss
    assert "Huber loss: first epoch" in out and namespace["fit"]["loss"][-1] < namespace["fit"]["loss"][0]
    opt = namespace["opt"]                                                           # section 10: an optimizer
    assert type(opt).__name__ == "Adagrad" and opt.iterations > 0 and "0.weight" in opt.state
    for backend in ("numpy", "strict"):        # section 11: a block of layers, alone and nested in a Residual
        assert f"layer contract of SqueezeExcite(channels=4, reduction=2) on {backend}: passed" in out
        assert f"SqueezeExcite(channels=4, reduction=2))) on {backend}: passed" in out
    assert "2.block.0.squeeze.3" in out and (tmp_path / "se.npz").is_file()
    assert list(namespace["se_back"].parameters())[2:4] == ["2.block.0.squeeze.1.weight", "2.block.0.squeeze.1.bias"]


def test_guide_documents_the_idioms():
    text = GUIDE.read_text(encoding="utf-8")
    python = "\n".join(src for lang, _, src in guide_blocks() if lang == "python")
    for idiom in ("p.data", "p.grad += g", "dn.to_host(p.data)", 'self.parameters()["w1"]'):
        assert idiom in text, idiom
    for idiom in (".grad += ", "self.add_param(", "def get_config", "def initialize", "dn.check_layer(",
                  "dn.Network(", "save_model(", "load_model(", "_need_cache()", "self._cache =",
                  "class Huber(dn.Loss)", "def forward_backward(self, z, y)", "dn.check_loss(",
                  "class Adagrad(dn.Optimizer)", "slots = (", "def update(self, w, g, state, ops, lr)",
                  "make_inputs=", "self.ops.arange("):
        assert idiom in python, idiom
    for idiom in ("## 9. Writing a loss", "## 10. Writing an optimizer", "self.ops.zeros(shape, dtype)",
                  "`xp.zeros(shape)` without `device=`", "np.array(0.25)", "### Layers that take integer inputs"):
        assert idiom in text, idiom
    assert "initialized = True" not in text          # users need no flag
    assert "arrange_as_first_layer" not in text      # layouts are the backend's business now
    assert "may set the class attribute `any_layout = True`, as `Dense`" in text


def test_the_backend_lays_out_only_the_first_layers_parameters_once_per_fit(rng):
    """What the guide says: the backend chooses layouts; fit asks it once, for the first
    layer's parameters (whose input error is never computed), at the run's batch size."""
    from deepnet.backend.numpy_ops import NumpyOps

    calls = []

    class Probe(NumpyOps):
        def training_layout(self, w, batch_size, input_grad):
            calls.append((tuple(w.shape), batch_size, input_grad))
            return super().training_layout(w, batch_size, input_grad)

    net = dn.Network([dn.Dense(3, 4), dn.Tanh(), dn.Dense(4, 2)], seed=0, backend=Probe())
    X = rng.normal(size=(16, 3)).astype(np.float32)
    net.fit(X, rng.integers(0, 2, 16), epochs=1, batch_size=8, loss="xent", optimizer=dn.SGD(0.1))
    assert calls == [((4, 3), 8, False), ((4,), 8, False)]     # once, on the first layer only

    class GuideRowMajorDense(dn.Dense):   # a layer that does not declare any_layout keeps row-major
        any_layout = False

    calls.clear()
    net = dn.Network([GuideRowMajorDense(3, 4), dn.Tanh(), dn.Dense(4, 2)], seed=0, backend=Probe())
    net.fit(X, rng.integers(0, 2, 16), epochs=1, batch_size=8, loss="xent", optimizer=dn.SGD(0.1))
    assert calls == [] and net.layers[0].parameters()["weight"].data.flags.c_contiguous


def test_a_layer_still_defining_the_old_layout_hook_is_told_it_is_not_called():
    with pytest.warns(UserWarning, match="arrange_as_first_layer is no longer called"):
        class GuideOldHook(dn.Dense):
            def arrange_as_first_layer(self, batch_size):
                return False


class PadZero(dn.Layer):
    """y = [x, 0]: the zero column made with xp.zeros, without device= (what the guide warns against)."""

    backward_free = True

    def output_width(self, n_in: int) -> int:
        return n_in + 1

    def zeros(self, n: int, dtype):
        return self.ops.xp.zeros((n, 1), dtype=dtype)

    def forward(self, x, training=False):
        return self.ops.xp.concat([x, self.zeros(x.shape[0], x.dtype)], axis=1)

    def backward(self, grad_output, need_input_grad=True):
        return grad_output[:, :-1] if need_input_grad else None


class OpsPadZero(PadZero):
    def zeros(self, n: int, dtype):
        return self.ops.zeros((n, 1), dtype)                 # what the guide says: made on the backend's device


def test_an_array_made_off_the_device_is_refused_where_it_is_made_on_strict():
    X = np.ones((2, 3), np.float32)
    with dn.use_backend("strict"):
        net = dn.Network([dn.Dense(3, 3), PadZero(), dn.Dense(4, 2)], seed=0)
        with pytest.raises(dn.BackendError, match=r"^xp\.zeros\(\.\.\.\) without device= makes an array on the CPU, "
                                                  r"not on the backend's device .*: create it through the backend, "
                                                  r"self\.ops\.zeros\(shape, dtype\)"):
            net.predict(X)
        good = dn.Network([dn.Dense(3, 3), OpsPadZero(), dn.Dense(4, 2)], seed=0)
        assert good.predict(X).shape == (2, 2)
        xp = dn.get_backend().xp
        assert xp.zeros((2,), device=dn.get_backend().device).shape == (2,)     # with device=: as before


def test_example_script_runs(capsys):
    runpy.run_path(str(ROOT / "examples" / "custom_layer.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "gradient check of Scale: passed" in out and "training accuracy" in out


# ---------------------------------------------------------------- layers used by the tests below
class AttrScale(dn.Layer):
    """y = x ∘ γ + β with γ, β kept as attributes; ∂f/∂γ = Σ_rows δ ∘ x, ∂f/∂β = Σ_rows δ."""

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.n_features = n_features
        self.n_in = n_features

    def get_config(self) -> dict:
        return {"n_features": self.n_features}

    def initialize(self, rng) -> None:
        self.gamma = self.add_param("gamma", rng.normal(1.0, 0.1, size=self.n_features))
        self.beta = self.add_param("beta", rng.normal(0.0, 0.1, size=self.n_features))

    def forward(self, x, training=False):
        self._cache = x if training else None
        return x * self.gamma.data + self.beta.data

    def backward(self, grad_output, need_input_grad=True):
        x = self._need_cache()
        xp = self.ops.xp
        self.gamma.grad += xp.sum(grad_output * x, axis=0)
        self.beta.grad += xp.sum(grad_output, axis=0)
        return grad_output * self.gamma.data if need_input_grad else None


class NoConfigScale(AttrScale):
    """AttrScale without get_config, storing its constructor argument under another name."""

    def __init__(self, width: int) -> None:
        super().__init__(width)

    get_config = dn.Layer.get_config


class NoConfigSwish(dn.Layer):
    """y = x ∘ σ(βx), without get_config."""

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        self.beta = float(beta)

    def forward(self, x, training=False):
        s = self.ops.sigmoid(x * self.beta)
        self._cache = (s, x * s) if training else None
        return x * s

    def backward(self, grad_output, need_input_grad=True):
        s, y = self._need_cache()
        return grad_output * (s + self.beta * y * (1.0 - s)) if need_input_grad else None


def _dense_param(seed: int = 0) -> dn.Parameter:
    layer = dn.Dense(3, 2)
    layer.to(dn.get_backend())
    layer.initialize(np.random.default_rng(seed))
    return layer.parameters()["weight"]


# ---------------------------------------------------------------- param.grad += g
def test_grad_plus_equals_after_zero_grad_gives_exactly_the_increment(backend, rng):
    p = _dense_param()
    g = rng.normal(size=(2, 3)).astype(np.float32)
    p.grad += to_device(g * 5.0)                     # something stale in the buffer
    p.zero_grad()
    before = p._grad
    p.grad += to_device(g)
    np.testing.assert_allclose(to_host(p.grad), g, rtol=1e-6)      # not stale + g
    p.grad += to_device(g)
    np.testing.assert_allclose(to_host(p.grad), 2 * g, rtol=1e-6)  # accumulates
    assert p._grad is before                         # in place: the same buffer
    p.zero_grad()
    p.grad[...] += to_device(g)                      # the indexed form still works
    np.testing.assert_allclose(to_host(p.grad), g, rtol=1e-6)


def test_grad_assignment_copies_into_the_buffer(backend, rng):
    p = _dense_param()
    buf = p._grad
    g = rng.normal(size=(2, 3)).astype(np.float32)
    p.zero_grad()
    p.grad = to_device(g)
    assert p._grad is buf and to_host(p.grad).dtype == np.float32
    np.testing.assert_allclose(to_host(p.grad), g, rtol=1e-6)
    p.grad = p.grad + to_device(g)                   # out of place, then copied in
    np.testing.assert_allclose(to_host(p.grad), 2 * g, rtol=1e-6)
    p.grad = 0.0
    assert float(to_host(p.grad).max()) == 0.0
    with pytest.raises(dn.ShapeError, match=r"^Parameter 'weight': grad must have shape \(2, 3\), got shape \(3, 2\)$"):
        p.grad = to_device(g.T.copy())


def test_grad_plus_equals_in_a_layer_backward(backend, rng):
    """A backward written with ``self.beta.grad += ...`` accumulates until zero_grad, then restarts."""
    layer = AttrScale(3)
    layer.to(dn.get_backend())
    layer.initialize(rng)
    x = to_device(rng.normal(size=(8, 3)).astype(np.float32))
    for _ in range(2):
        layer.forward(x, training=True)
        layer.backward(to_device(np.ones((8, 3), np.float32)))
    np.testing.assert_allclose(to_host(layer.beta.grad), np.full(3, 16.0))
    layer.zero_grad()
    layer.forward(x, training=True)
    layer.backward(to_device(np.ones((8, 3), np.float32)))
    np.testing.assert_allclose(to_host(layer.beta.grad), np.full(3, 8.0))


# ---------------------------------------------------------------- param.data, attribute access
def test_parameters_kept_as_attributes_check_and_train(backend, rng):
    x = rng.normal(size=(5, 3))
    report = check_layer(AttrScale(3), x)
    assert set(report.checked) == {"input", "gamma", "beta"}
    X = rng.normal(size=(64, 3)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    net = dn.Network([AttrScale(3), dn.Dense(3, 2)], seed=0)
    layer = net.layers[0]
    assert layer.gamma is layer.parameters()["gamma"] is net.parameters()["0.gamma"]
    before = to_host(layer.gamma.data).copy()
    net.fit(X, y, epochs=2, batch_size=16, loss="xent", optimizer=dn.SGD(0.1))
    assert not np.allclose(to_host(layer.gamma.data), before)      # trained through the attribute


def test_parameter_value_read_and_write(backend, rng):
    layer = AttrScale(3)
    layer.to(dn.get_backend())
    layer.initialize(rng)
    p = layer.parameters()["gamma"]
    assert isinstance(to_host(p.data), np.ndarray) and p.shape == (3,)
    p.data[...] = to_device(np.array([1.0, 2.0, 3.0], np.float32))
    layer.beta.data[...] = 0.0
    y = layer.forward(to_device(np.ones((2, 3), np.float32)))
    np.testing.assert_allclose(to_host(y), [[1.0, 2.0, 3.0]] * 2)


# ---------------------------------------------------------------- initialization kept by the base class
def test_user_layer_keeps_trained_weights_in_a_new_network(backend, rng):
    X = rng.normal(size=(32, 3)).astype(np.float32)
    layers = [AttrScale(3), dn.Dense(3, 2)]
    net = dn.Network(layers, seed=0)
    net.fit(X, (X[:, 0] > 0).astype(np.int64), epochs=1, batch_size=8, loss="xent", optimizer=dn.SGD(0.5))
    trained = net.get_weights()
    again = dn.Network(layers, seed=123)            # another seed would draw other weights
    for name, w in again.get_weights().items():
        np.testing.assert_array_equal(w, trained[name])


def test_initialized_is_kept_by_the_base_class(rng):
    layer = AttrScale(3)
    assert layer.initialized is False
    layer.initialize(rng)                            # no flag set by the layer: add_param marks it
    assert layer.initialized is True

    swish = NoConfigSwish()
    assert swish.initialized is False
    dn.Network([dn.Dense(3, 3), swish])
    assert swish.initialized is True                 # Network marks the layers it initialized

    net = dn.Network([AttrScale(3), dn.Dense(3, 2)], seed=0)
    first = net.get_weights()
    for lay in net.layers:
        lay.initialized = False                      # still writable: ask for fresh parameters
    redrawn = dn.Network(net.layers, seed=1).get_weights()
    assert not np.array_equal(redrawn["0.gamma"], first["0.gamma"])
    assert not np.array_equal(redrawn["1.weight"], first["1.weight"])


# ---------------------------------------------------------------- get_config checked at save time
def _net(layer: dn.Layer) -> dn.Network:
    return dn.Network([dn.Dense(3, 3), layer, dn.Dense(3, 2)], seed=0)


def test_save_refuses_a_layer_without_get_config_before_writing(tmp_path):
    path = tmp_path / "model.npz"
    save_model(_net(AttrScale(3)), path)
    before = path.read_bytes()
    with pytest.raises(ModelFileError) as err:
        save_model(_net(NoConfigScale(3)), path)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: cannot save layer 1 (NoConfigScale): ")
    assert "missing 1 required positional argument: 'width'" in msg and "define get_config()" in msg
    assert path.read_bytes() == before               # the existing file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]


def test_save_refuses_a_setting_get_config_would_lose(tmp_path):
    path = tmp_path / "model.npz"
    with pytest.raises(ModelFileError, match=r"cannot save layer 1 \(NoConfigSwish\): NoConfigSwish has no "
                                             r"get_config\(\), so saving would lose beta=2\.0: define get_config"):
        save_model(_net(NoConfigSwish(beta=2.0)), path)
    assert not path.exists()


def test_save_accepts_a_layer_without_get_config_when_nothing_is_lost(tmp_path, rng):
    net = _net(NoConfigSwish())                      # the default: rebuilt exactly by NoConfigSwish()
    X = rng.normal(size=(4, 3)).astype(np.float32)
    loaded = load_model(save_model(net, tmp_path / "model.npz"))
    np.testing.assert_allclose(loaded.predict(X), net.predict(X), rtol=1e-6)


def test_save_refuses_a_config_that_rebuilds_other_shapes(tmp_path):
    class WrongConfigScale(AttrScale):
        def get_config(self) -> dict:
            return {"n_features": 4}

    with pytest.raises(ModelFileError, match=r"layer 1 \(WrongConfigScale\): "
                                             r"WrongConfigScale\(\*\*\{'n_features': 4\}\) rebuilds parameters \{'gamma': \(4,\), 'beta': \(4,\)\}, "
                                             r"but the layer has \{'gamma': \(3,\), 'beta': \(3,\)\}"):
        save_model(_net(WrongConfigScale(3)), tmp_path / "model.npz")


@pytest.mark.parametrize("value, shown", [((3,), r"n_features=\(3,\) \(tuple\)"),
                                          (np.int64(3), r"n_features=(np\.int64\()?3\)? \(int64\)")])
def test_save_refuses_a_config_that_is_not_plain_data(tmp_path, value, shown):
    class OddConfigScale(AttrScale):
        def get_config(self) -> dict:
            return {"n_features": value}

    with pytest.raises(ModelFileError, match=rf"OddConfigScale\.get_config\(\) must return plain data .*got {shown}$"):
        save_model(_net(OddConfigScale(3)), tmp_path / "model.npz")


def test_user_layer_round_trip_and_check_config(tmp_path, rng):
    net = _net(AttrScale(3))
    assert net.layers[1].check_config() == {"n_features": 3}
    X = rng.normal(size=(4, 3)).astype(np.float32)
    loaded = load_model(save_model(net, tmp_path / "model.npz"))
    assert isinstance(loaded.layers[1], AttrScale)
    np.testing.assert_allclose(loaded.predict(X), net.predict(X), rtol=1e-6)


def test_builtin_layers_pass_check_config():
    from deepnet.presets import ShortcutSigmoidDense, seed_network

    layers = [dn.Dense(3, 4, bias=False, init="he"), dn.BatchNorm(4, momentum=0.8), dn.LayerNorm(4),
              dn.Dropout(0.2, seed=3), dn.LeakyReLU(0.2), dn.ELU(0.5), dn.GELU(), dn.Softplus(), dn.Sigmoid(),
              dn.Tanh(), dn.ReLU(), dn.Softmax(), dn.Identity(), ShortcutSigmoidDense(4, 2)]
    net = dn.Network(layers, seed=0)
    for layer in net.layers + seed_network().layers:
        assert layer.check_config(trial=True) == layer.get_config()


def test_load_error_for_a_bad_config_hints_at_get_config(tmp_path):
    from deepnet.io import build_layers

    with pytest.raises(ModelFileError, match=r"layer 0 \(AttrScale\): bad settings \{\}: .*missing.*"
                                             r"\(does AttrScale\.get_config\(\) return every constructor argument\?\)"):
        build_layers([{"type": "AttrScale", "config": {}}], tmp_path / "m.npz")



def test_checkpointing_refuses_a_layer_whose_config_cannot_rebuild_it(tmp_path):
    """A checkpoint that could be written but never loaded is refused before the first step."""
    import numpy as np

    from deepnet.checkpoint import Checkpointer
    from deepnet.io import ModelFileError

    class Shift(dn.Layer):                       # a setting, but no get_config: it would be lost
        def __init__(self, by: float = 0.0) -> None:
            super().__init__()
            self.by = by

        def forward(self, x, training=False):
            return x + self.by

        def backward(self, grad_output, need_input_grad=True):
            return grad_output

    net = dn.Network([Shift(2.0), dn.Dense(3, 2)], seed=0)
    X = np.zeros((8, 3), np.float32)
    with pytest.raises(ModelFileError, match=r"cannot checkpoint layer 0 \(Shift\).*would lose by"):
        net.fit(X, np.arange(8) % 2, loss="xent", optimizer="sgd", checkpoint=Checkpointer(tmp_path))
    assert not list(tmp_path.glob("ckpt-*.npz"))
