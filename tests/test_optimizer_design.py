"""The optimizer owns its learning rate (one value, its device scalars written when it is set),
receives it in its update, applies gradient transforms as ordered hooks, and a new optimizer
is one class plus ``register_optimizer``: by name in fit, the CLI and checkpoints, eager and
captured on every backend."""

from __future__ import annotations

import numpy as np
import pytest

import deepnet as dn
from deepnet.backend import get_ops, to_host
from deepnet.checkpoint import Checkpointer
from deepnet.cli import build_parser
from deepnet.errors import ModelFileError
from deepnet.optimizers import OPTIMIZERS, Optimizer, get_optimizer


@pytest.fixture
def registrations():
    """Forget the optimizer classes and names a test registers."""
    names, classes = set(OPTIMIZERS), set(Optimizer.registry.values())
    yield
    for name in set(OPTIMIZERS) - names:
        del OPTIMIZERS[name]
    for cls in set(Optimizer.registry.values()) - classes:
        Optimizer.registry.remove(cls)


def _lion_class(qualname: str = "Lion"):
    class Lion(dn.Optimizer):
        """w ← w − η sign(β₁ m + (1 − β₁) g); m ← β₂ m + (1 − β₂) g."""

        __qualname__ = qualname               # where the class is defined, as checkpoints name it
        slots = ("m",)
        capturable = True
        seen: list = []

        def __init__(self, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.99, **kw) -> None:
            super().__init__(lr, **kw)
            self.beta1, self.beta2 = float(beta1), float(beta2)

        def get_config(self) -> dict:
            return {**super().get_config(), "beta1": self.beta1, "beta2": self.beta2}

        def update(self, w, g, state, ops, lr):
            type(self).seen.append(type(lr))
            m = state["m"]
            w -= ops.xp.sign(m * self.beta1 + g * (1.0 - self.beta1)) * lr
            m *= self.beta2
            m += g * (1.0 - self.beta2)

    return Lion


def _data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)).astype(np.float32), rng.integers(0, 3, n)


def _net(ops=None):
    return dn.Network([dn.Dense(4, 8), dn.Tanh(), dn.Dense(8, 3)], seed=0, backend=ops)


def _weights(net):
    return {k: to_host(p.data).copy() for k, p in net.parameters().items()}


# ---------------------------------------------------------------- the learning rate
def test_setting_lr_writes_the_device_scalars_a_captured_step_reads(backend):
    """No copy for the loop to make: the step's device scalars are the optimizer's own."""
    for opt in (dn.SGD(0.1), dn.Adam(1e-3)):
        sc = opt.device_scalars(backend, backend.float32)
        opt.lr = 0.25
        assert float(to_host(sc.lr_w)) == 0.25 and float(to_host(sc.lr)) == 0.25 and opt.lr == 0.25


def test_a_learning_rate_that_is_not_a_finite_non_negative_number_is_refused():
    opt = dn.SGD(0.1)
    for bad in (float("nan"), float("inf"), -0.1, "fast"):
        with pytest.raises(ValueError, match="learning rate must be a"):
            opt.lr = bad
    assert opt.lr == 0.1
    opt.lr = 0.0                                # a cosine schedule ends at min_lr = 0
    assert opt.lr == 0.0


def test_schedules_plateaus_and_the_nan_guard_go_through_the_optimizer():
    from deepnet.schedules import ReduceLROnPlateau, step_decay

    opt = dn.SGD(0.1)
    assert opt.apply_schedule(step_decay(0.1, every=2), 4) == pytest.approx(0.001)
    assert opt.scale_lr(0.5, floor=0.0008) == 0.0008
    net = _net()
    net.optimizer = dn.SGD(0.1)
    plateau = ReduceLROnPlateau(patience=1, factor=0.5)
    plateau.on_epoch_end(net, 0, {"val_loss": 1.0})
    plateau.on_epoch_end(net, 1, {"val_loss": 1.0})
    assert net.optimizer.lr == 0.05


@pytest.mark.cupy_shaped
def test_eager_step_on_a_device_backend_takes_the_device_learning_rate_without_syncs(registrations):
    """On CuPy's code path the update receives η as a 0-d device array: no upload, no read."""
    ops = get_ops("cupy-shaped")
    Lion = _lion_class()

    def syncs(steps):
        X, y = _data(8 * steps)
        net = _net(ops)
        ops.xp.host_syncs.reset()
        net.fit(X, y, epochs=2, batch_size=8, loss="xent", optimizer=Lion(), graphs="off")
        return ops.xp.host_syncs.count, ops.xp.host_syncs.uploads

    assert syncs(3) == syncs(9)
    assert set(Lion.seen) == {ops.xp.ndarray}


# ---------------------------------------------------------------- gradient transforms
def test_transforms_run_in_order_around_the_update():
    calls = []

    class Tag(dn.GradientTransform):
        def __init__(self, name):
            self.name = name

        def before(self, params, ops):
            calls.append(("before", self.name))

        def after(self, params, ops):
            calls.append(("after", self.name))

    class Logged(dn.SGD):
        capturable = True

        def update(self, w, g, state, ops, lr):
            calls.append("update")
            super().update(w, g, state, ops, lr)

    opt = Logged(0.1, clip_norm=1.0, max_norm=2.0, weight_decay=0.01, transforms=[Tag("a"), Tag("b")])
    assert [type(t).__name__ for t in opt.transforms] == ["ClipNorm", "WeightDecay", "Tag", "Tag", "MaxNorm"]
    X, y = _data(16)
    _net().fit(X, y, epochs=1, batch_size=16, loss="xent", optimizer=opt)
    assert calls == [("before", "a"), ("before", "b"), *["update"] * 4, ("after", "a"), ("after", "b")]


@pytest.mark.parametrize("make, plain", [
    (lambda: dn.SGD(0.1, momentum=0.9, weight_decay=0.05, weight_decay_exclude=("bias",)),
     lambda: dn.SGD(0.1, momentum=0.9)),
    (lambda: dn.AdamW(1e-2, weight_decay=0.05, weight_decay_exclude=lambda name: name.endswith("bias")),
     lambda: dn.Adam(1e-2)),
])
def test_weight_decay_skips_the_excluded_parameters(make, plain, backend):
    """One step: the excluded biases move exactly as without decay, the weights exactly as with
    decay on every parameter (later steps mix the two through the gradients)."""
    X, y = _data()
    runs = {}
    for key, opt in (("excl", make()), ("plain", plain())):
        net = _net(backend)
        net.fit(X, y, epochs=1, batch_size=96, loss="xent", optimizer=opt)
        runs[key] = _weights(net)
    all_decayed = make()
    all_decayed.weight_decay_exclude = None
    net = _net(backend)
    net.fit(X, y, epochs=1, batch_size=96, loss="xent", optimizer=all_decayed)
    runs["all"] = _weights(net)
    for name in runs["excl"]:
        ref = runs["plain"] if name.endswith("bias") else runs["all"]
        # (a rounding apart at most: one path may take the multi-tensor kernel, the other not)
        np.testing.assert_allclose(runs["excl"][name], ref[name], rtol=1e-6, atol=1e-7, err_msg=name)
        if name.endswith("weight"):
            assert np.abs(runs["excl"][name] - runs["plain"][name]).max() > 1e-5


def test_bad_transforms_are_refused_in_one_line():
    with pytest.raises(TypeError, match="transforms must be GradientTransform objects, got 0.5"):
        dn.SGD(0.1, transforms=[0.5])
    with pytest.raises(ValueError, match="expected parameter names or a predicate"):
        dn.WeightDecay(0.1, exclude=[1, 2])
    with pytest.raises(ValueError, match="clip_norm must be a positive finite number"):
        dn.ClipNorm(0.0)


# ---------------------------------------------------------------- adding an optimizer
def test_a_registered_optimizer_is_known_by_name_to_fit_the_cli_and_get_optimizer(registrations):
    Lion = dn.register_optimizer("testlion")(_lion_class())
    assert isinstance(get_optimizer("TestLion", lr=0.01), Lion)
    assert build_parser().parse_args(["train", "--optimizer", "testlion"]).optimizer == "testlion"
    X, y = _data()
    net = _net()
    net.fit(X, y, epochs=1, batch_size=32, loss="xent", optimizer="testlion")
    assert type(net.optimizer) is Lion and net.optimizer.iterations == 3
    other = _lion_class()
    with pytest.raises(ValueError, match="the name 'testlion' is taken by .*Lion; choose another"):
        dn.register_optimizer("testlion")(type("Lion2", (other,), {}))


@pytest.mark.parametrize("graphs", ["on", "epoch"])
def test_a_user_optimizer_trains_captured_exactly_as_eagerly(registrations, graphs, backend):
    Lion = _lion_class()
    X, y = _data(100)
    out = []
    for mode in ("off", graphs):
        net = _net(backend)
        net.fit(X, y, epochs=2, batch_size=16, loss="xent", optimizer=Lion(1e-2), graphs=mode, check_finite="off")
        out.append(_weights(net))
    for name in out[0]:
        np.testing.assert_array_equal(out[0][name], out[1][name], err_msg=name)


def test_capability_is_declared_by_the_class_that_defines_the_update():
    """Not by module: a class defined outside deepnet that declares it is captured, one inside
    deepnet's namespace that does not is not."""
    class Undeclared(dn.Optimizer):
        def update(self, w, g, state, ops, lr):
            w -= g * lr

    Undeclared.update.__module__ = "deepnet.optimizers"       # looks built-in to a module test
    Declared = type("Declared", (Undeclared,), {"capturable": True})
    assert not Undeclared().can_capture() and Declared().can_capture()
    assert type("Sub", (Declared,), {})().can_capture()        # inherits the update and its declaration


def test_a_checkpoint_restores_a_user_optimizer_by_its_registered_name(registrations, tmp_path):
    """The class moved (another qualified name) but is registered under the same name: restored,
    with its step count and slots; unregistered, one line says what to register."""
    first = dn.register_optimizer("movinglion")(_lion_class())
    X, y = _data()
    net = _net()
    net.fit(X, y, epochs=1, batch_size=32, loss="xent", optimizer=first(0.01), checkpoint=str(tmp_path))
    slots = {k: to_host(v).copy() for k, v in net.optimizer.state["0.weight"].items()}
    Optimizer.registry.remove(first)
    del OPTIMIZERS["movinglion"]

    second = dn.register_optimizer("movinglion")(_lion_class("elsewhere.Lion"))
    fresh = _net()
    fresh.optimizer = dn.SGD(0.1)
    Checkpointer(tmp_path).restore(fresh)
    assert type(fresh.optimizer) is second and fresh.optimizer.iterations == 3 and fresh.optimizer.lr == 0.01
    np.testing.assert_array_equal(to_host(fresh.optimizer.state["0.weight"]["m"]), slots["m"])

    Optimizer.registry.remove(second)
    del OPTIMIZERS["movinglion"]
    fresh.optimizer = dn.SGD(0.1)
    with pytest.raises(ModelFileError, match=r"register.*@deepnet\.register_optimizer\('movinglion'\)") as err:
        Checkpointer(tmp_path).restore(fresh)
    assert "\n" not in str(err.value)


def test_an_optimizer_written_for_the_scalars_signature_still_trains_eagerly_with_a_warning():
    """Before the optimizer owned η, ``update(w, g, state, ops, scalars=None)`` read
    ``self.lr if scalars is None else scalars.lr_w``: such a class keeps training (eagerly,
    with its own η), says how to update it, and is not captured."""
    import warnings as _w

    with pytest.warns(DeprecationWarning, match=r"OldSGD.update\(..., ops, scalars\): optimizers now receive"):
        class OldSGD(dn.Optimizer):
            def update(self, w, g, state, ops, scalars=None):
                w -= (self.lr if scalars is None else scalars.lr_w) * g

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 4)), rng.integers(0, 2, 40)
    nets = [dn.Network([dn.Dense(4, 2)], seed=3, dtype="float64", loss="xent", optimizer=opt)
            for opt in (OldSGD(lr=0.1), dn.SGD(0.1))]
    with _w.catch_warnings():
        _w.simplefilter("ignore")
        for net in nets:
            net.fit(X, y, epochs=2, batch_size=8)
    np.testing.assert_array_equal(nets[0].get_weights()["0.weight"], nets[1].get_weights()["0.weight"])
    assert OldSGD.capturable is False

    with pytest.warns(DeprecationWarning, match=r"OldAdam.update\(..., ops, scalars\)"):
        class OldAdam(dn.Adam):               # the old way to extend a built-in: hand scalars on
            def update(self, w, g, state, ops, scalars=None):
                super().update(w, g, state, ops, scalars)

    nets = [dn.Network([dn.Dense(4, 2)], seed=3, dtype="float64", loss="xent", optimizer=opt)
            for opt in (OldAdam(0.01, weight_decay=0.1), dn.Adam(0.01, weight_decay=0.1))]
    with _w.catch_warnings():
        _w.simplefilter("ignore")
        for net in nets:
            net.fit(X, y, epochs=2, batch_size=8)
    np.testing.assert_allclose(nets[0].get_weights()["0.weight"], nets[1].get_weights()["0.weight"], rtol=1e-12)

