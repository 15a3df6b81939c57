"""Model files name each class unambiguously (issue 23, item 5): a program's own ``GELU``
never replaces the built-in a file was saved with, a program's own class loads only under
the name it was saved with, old files that name only a short type still load, and an
ambiguity is an error naming every candidate."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

import deepnet as dn
from deepnet.checkpoint import Checkpointer
from deepnet.errors import ResumeError
from deepnet.interop import torch_modules
from deepnet.io import ModelFileError, load_checkpoint_model, load_model, save_model
from deepnet.layers.base import Layer
from deepnet.losses import Loss, SoftmaxCrossEntropy, get_loss
from deepnet.model_files import read_tensors, write_tensors
from deepnet.optimizers import Optimizer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def forget_test_classes():
    """The registries are process-wide: forget the classes a test defines."""
    registries = (Layer.registry, Loss.registry, Optimizer.registry)
    before = [set(r) for r in registries]
    yield
    for r, names in zip(registries, before):
        for name in set(r) - names:
            r.remove(r[name])


def sigmoid_gelu() -> type[Layer]:
    """A program's own ``GELU``: x·σ(1.702x), which differs from the built-in tanh form by ~0.02."""

    class GELU(Layer):
        def forward(self, x, training=False):
            return x * self.ops.sigmoid(1.702 * x)

    return GELU


def gelu_net() -> dn.Network:
    return dn.Network([dn.Dense(4, 8), dn.GELU(), dn.Dense(8, 3)], seed=0)


def inputs() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(16, 4)).astype(np.float32) * 2


def rewrite_header(path: Path, change, fmt: str = "deepnet-model") -> None:
    """Re-save ``path`` with ``change(header)`` applied (e.g. a file in the older format)."""
    tensors, header = read_tensors(path, expect_format=fmt)
    change(header)
    write_tensors(path, tensors, header)


def old_format(header: dict) -> None:
    """The header as deepnet wrote it before qualified class names (short names only)."""
    for entry in header["layers"]:
        del entry["class"]
    if header.get("loss"):
        del header["loss"]["class"]
    if header.get("optimizer"):
        del header["optimizer"]["class"]


# ---------------------------------------------------------------- the user's path, as two scripts
SAVE = """
import numpy as np, deepnet as dn
from deepnet.io import save_model
net = dn.Network([dn.Dense(4, 8), dn.GELU(), dn.Dense(8, 3)], seed=0)
X = np.random.default_rng(1).normal(size=(16, 4)).astype(np.float32) * 2
save_model(net, "model.npz")
np.save("expected.npy", net.predict(X))
np.save("X.npy", X)
"""

LOAD_WITH_OWN_GELU = """
import numpy as np, deepnet as dn
from deepnet.io import load_model

class GELU(dn.Layer):
    def forward(self, x, training=False):
        return x * self.ops.sigmoid(1.702 * x)

net = load_model("model.npz")
got = net.predict(np.load("X.npy"))
print(type(net.layers[1]).__module__, float(np.abs(got - np.load("expected.npy")).max()))
"""


def run_script(folder: Path, source: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(folder)])}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(source)], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=120)


def test_a_script_defining_its_own_gelu_loads_the_builtin_a_file_was_saved_with(tmp_path):
    assert run_script(tmp_path, SAVE).returncode == 0
    done = run_script(tmp_path, LOAD_WITH_OWN_GELU)
    assert done.returncode == 0, done.stderr
    module, diff = done.stdout.split()
    assert module == "deepnet.layers.activations" and float(diff) == 0.0


SCALE = """
class Scale(dn.Layer):
    def __init__(self, c=2.0):
        super().__init__()
        self.c = c

    def get_config(self):
        return {"c": self.c}

    def forward(self, x, training=False):
        return x * self.c
"""

SAVE_MAIN = "import numpy as np, deepnet as dn\nfrom deepnet.io import save_model\n" + SCALE + """
net = dn.Network([dn.Dense(4, 3), Scale(3.0)], seed=0)
np.save("expected.npy", net.predict(np.ones((2, 4), np.float32)))
save_model(net, "model.npz")
"""

LOAD = """
import sys, numpy as np, deepnet as dn
from deepnet.io import ModelFileError, load_model
{define}
try:
    net = load_model("model.npz"{classes})
except ModelFileError as err:
    sys.exit(str(err))
assert type(net.layers[1]) is Scale and net.layers[1].c == 3.0
assert np.array_equal(net.predict(np.ones((2, 4), np.float32)), np.load("expected.npy"))
print("loaded", type(net.layers[1]).__module__)
"""


def test_a_class_saved_from_a_script_loads_in_another_script_that_defines_it(tmp_path):
    """Saved as ``__main__.Scale``: a script defining ``Scale`` itself loads it; a script that
    imports ``Scale`` from a module has another class (``mylayers.Scale``), so it is told so and
    names it explicitly."""
    assert run_script(tmp_path, SAVE_MAIN).returncode == 0
    (tmp_path / "mylayers.py").write_text("import deepnet as dn\n" + SCALE)
    same = run_script(tmp_path, LOAD.format(define=SCALE, classes=""))
    assert same.returncode == 0 and same.stdout.split() == ["loaded", "__main__"], same.stderr
    imported = run_script(tmp_path, LOAD.format(define="from mylayers import Scale", classes=""))
    assert imported.returncode == 1 and imported.stdout == ""
    message = imported.stderr.strip()
    assert "layer class '__main__.Scale' is not defined in this program, which defines 'mylayers.Scale'" in message
    assert "classes={'__main__.Scale': <class>}" in message and "\n" not in message
    named = run_script(tmp_path, LOAD.format(define="from mylayers import Scale",
                                             classes=", classes={'__main__.Scale': Scale}"))
    assert named.returncode == 0 and named.stdout.split() == ["loaded", "mylayers"], named.stderr


# ---------------------------------------------------------------- in one program
def test_own_gelu_never_replaces_the_builtin_on_load(tmp_path):
    net, X = gelu_net(), inputs()
    save_model(net, tmp_path / "model.npz")
    own = sigmoid_gelu()
    assert np.abs(own().forward(X) - dn.GELU().forward(X)).max() > 0.01     # the two really differ
    loaded = load_model(tmp_path / "model.npz")
    assert type(loaded.layers[1]) is dn.GELU
    assert np.array_equal(loaded.predict(X), net.predict(X))


def test_own_class_of_a_builtin_name_round_trips_as_itself(tmp_path):
    own = sigmoid_gelu()
    net, X = dn.Network([dn.Dense(4, 8), own(), dn.Dense(8, 3)], seed=0), inputs()
    save_model(net, tmp_path / "model.npz")
    _, header = read_tensors(tmp_path / "model.npz")
    assert header["layers"][1] == {"type": "GELU", "class": f"{own.__module__}.{own.__qualname__}", "config": {}}
    assert header["layers"][0]["class"] == "deepnet.layers.dense.Dense"
    loaded = load_model(tmp_path / "model.npz")
    assert type(loaded.layers[1]) is own
    assert np.array_equal(loaded.predict(X), net.predict(X))


def test_a_users_class_loads_only_under_the_name_it_was_saved_with(tmp_path):
    own = sigmoid_gelu()
    save_model(dn.Network([dn.Dense(4, 8), own(), dn.Dense(8, 3)], seed=0), tmp_path / "model.npz")
    saved = f"{own.__module__}.{own.__qualname__}"
    Layer.registry.remove(own)                 # a later program that does not define it ...
    with pytest.raises(ModelFileError) as err:
        load_model(tmp_path / "model.npz")     # ... gets an error, never the built-in GELU
    assert f"layer 1: layer class {saved!r} is not defined in this program" in str(err.value)
    assert "'deepnet.layers.activations.GELU'" in str(err.value) and "\n" not in str(err.value)

    class GELU(Layer):                         # another class of the same short name elsewhere
        def forward(self, x, training=False):
            return x

    other = f"{GELU.__module__}.{GELU.__qualname__}"
    with pytest.raises(ModelFileError) as err:
        load_model(tmp_path / "model.npz")
    assert repr(saved) in str(err.value) and repr(other) in str(err.value)
    assert "a class loads only under the name it was saved with" in str(err.value)
    loaded = load_model(tmp_path / "model.npz", classes={saved: GELU})     # named explicitly: taken
    assert type(loaded.layers[1]) is GELU


def test_a_builtin_moved_to_another_module_still_loads_as_the_builtin(tmp_path):
    save_model(gelu_net(), tmp_path / "model.npz")
    sigmoid_gelu()
    rewrite_header(tmp_path / "model.npz",
                   lambda h: h["layers"][1].update({"class": "deepnet.layers.nonlinear.GELU"}))
    assert type(load_model(tmp_path / "model.npz").layers[1]) is dn.GELU


# ---------------------------------------------------------------- files that name only a short type
def test_an_old_file_naming_gelu_loads_the_builtin_and_says_so(tmp_path):
    net, X = gelu_net(), inputs()
    save_model(net, tmp_path / "model.npz")
    rewrite_header(tmp_path / "model.npz", old_format)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert type(load_model(tmp_path / "model.npz").layers[1]) is dn.GELU      # no warning: no other GELU
    own = sigmoid_gelu()
    with pytest.warns(UserWarning, match="names only 'GELU'.*loading deepnet's deepnet.layers.activations.GELU"):
        loaded = load_model(tmp_path / "model.npz")
    assert type(loaded.layers[1]) is dn.GELU and np.array_equal(loaded.predict(X), net.predict(X))
    assert type(load_model(tmp_path / "model.npz", classes={"GELU": own}).layers[1]) is own


def test_an_old_file_naming_a_users_class_loads_the_one_class_of_that_name(tmp_path):
    class Halve(Layer):
        def forward(self, x, training=False):
            return x * 0.5

    save_model(dn.Network([dn.Dense(4, 3), Halve()], seed=0), tmp_path / "model.npz")
    rewrite_header(tmp_path / "model.npz", old_format)
    assert type(load_model(tmp_path / "model.npz").layers[1]) is Halve


def test_two_users_classes_of_one_short_name_are_an_error_naming_both(tmp_path):
    def make(factor):
        class Halve(Layer):
            def forward(self, x, training=False):
                return x * factor
        return Halve

    first = make(0.5)
    save_model(dn.Network([dn.Dense(4, 3), first()], seed=0), tmp_path / "model.npz")
    rewrite_header(tmp_path / "model.npz", old_format)
    second = type("Halve", (Layer,), {"__module__": "mylayers", "__qualname__": "Halve",
                                      "forward": lambda self, x, training=False: x})
    with pytest.raises(ModelFileError) as err:
        load_model(tmp_path / "model.npz")
    message = str(err.value)
    assert "layer 1: layer type 'Halve' is ambiguous" in message and "\n" not in message
    assert repr(f"{first.__module__}.{first.__qualname__}") in message and "'mylayers.Halve'" in message
    assert type(load_model(tmp_path / "model.npz", classes={"Halve": second}).layers[1]) is second


def test_a_file_never_imports_the_module_it_names(tmp_path):
    save_model(gelu_net(), tmp_path / "model.npz")
    rewrite_header(tmp_path / "model.npz",
                   lambda h: h["layers"][1].update({"type": "Popen", "class": "subprocess.Popen"}))
    with pytest.raises(ModelFileError, match="unknown layer class 'subprocess.Popen'"):
        load_model(tmp_path / "model.npz")


# ---------------------------------------------------------------- losses, checkpoints, optimizers, PyTorch
def test_own_loss_of_a_builtin_name_never_replaces_the_builtin(tmp_path):
    net = gelu_net()
    net.loss = "xent"
    save_model(net, tmp_path / "model.npz")

    class SoftmaxCrossEntropy(Loss):           # noqa: F811  (a program's own, same short name)
        def forward_backward(self, z, y):
            raise AssertionError("the program's own loss")

    assert type(load_model(tmp_path / "model.npz").loss) is dn.losses.SoftmaxCrossEntropy
    net.loss = SoftmaxCrossEntropy()
    save_model(net, tmp_path / "own.npz")
    assert type(load_model(tmp_path / "own.npz").loss) is SoftmaxCrossEntropy
    Loss.registry.remove(SoftmaxCrossEntropy)
    with pytest.warns(UserWarning, match="loads without its loss"):
        assert load_model(tmp_path / "own.npz").loss is None


def fit_with_checkpoint(folder: Path, optimizer=None, epochs: int = 1, resume: bool = False) -> dn.Network:
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(32, 4)).astype(np.float32), rng.integers(0, 3, 32)
    net = gelu_net()
    net.fit(X, y, epochs=epochs, batch_size=16, loss="xent", optimizer=optimizer or dn.Adam(0.01),
            checkpoint=Checkpointer(folder), resume=resume)
    return net


def test_a_checkpoint_loads_the_builtin_gelu_and_resumes_from_an_old_format_one(tmp_path):
    net, X = fit_with_checkpoint(tmp_path / "ck"), inputs()
    ck = Checkpointer(tmp_path / "ck")
    sigmoid_gelu()
    loaded = load_checkpoint_model(ck.last_path())
    assert type(loaded.layers[1]) is dn.GELU and np.array_equal(loaded.predict(X), net.predict(X))
    rewrite_header(ck.last_path(), old_format, "deepnet-checkpoint")
    fresh = gelu_net()
    fresh.optimizer = dn.Adam(0.01)
    with pytest.warns(UserWarning, match="names only 'GELU'"):
        ck.restore(fresh)
    assert type(fresh.optimizer) is dn.Adam and np.array_equal(fresh.predict(X), net.predict(X))


def test_a_checkpoint_restores_the_optimizer_class_it_names(tmp_path):
    fit_with_checkpoint(tmp_path / "ck", dn.Adam(0.01))

    class Adam(dn.Adam):                      # a program's own optimizer named like the built-in
        pass

    fresh = gelu_net()
    fresh.optimizer = Adam(0.01)
    Checkpointer(tmp_path / "ck").restore(fresh)
    assert type(fresh.optimizer) is dn.Adam


def test_resuming_with_a_users_optimizer_of_a_builtin_name_is_refused(tmp_path):
    fit_with_checkpoint(tmp_path / "ck", dn.Adam(0.01))

    class Adam(dn.Adam):                      # same short name, same settings: another class
        pass

    with pytest.raises(ResumeError, match=f"optimizer: checkpoint 'Adam', given '{Adam.__module__}.{Adam.__qualname__}'"):
        fit_with_checkpoint(tmp_path / "ck", Adam(0.01), epochs=2, resume=True)
    fit_with_checkpoint(tmp_path / "ck", dn.Adam(0.01), epochs=2, resume=True)     # the built-in resumes


def test_a_checkpoint_of_a_users_optimizer_written_before_qualified_names_resumes(tmp_path):
    class Halving(dn.SGD):
        pass

    fit_with_checkpoint(tmp_path / "ck", Halving(0.01))
    ck = Checkpointer(tmp_path / "ck")

    def short_names(header):
        old_format(header)
        header["settings"]["optimizer"] = "Halving"

    rewrite_header(ck.last_path(), short_names, "deepnet-checkpoint")
    assert fit_with_checkpoint(tmp_path / "ck", Halving(0.01), epochs=2, resume=True).step_count == 4


def test_to_torch_refuses_a_users_gelu_instead_of_calling_it_torchs(tmp_path):
    own = sigmoid_gelu()
    assert torch_modules(gelu_net())[1] == ("GELU", {"approximate": "tanh"})
    with pytest.raises(ValueError, match="no PyTorch equivalent"):
        torch_modules(dn.Network([dn.Dense(4, 8), own(), dn.Dense(8, 3)], seed=0))


def test_a_loss_named_by_a_string_that_two_classes_share_is_an_error_naming_both():
    """``loss="SumOfSquares"`` once the program defines its own ``SumOfSquares``: deepnet 883a836
    took the program's class, a registry by qualified name the built-in; neither is silently
    picked: one line names both, and how to choose."""
    class SumOfSquares(Loss):                  # a program's own, a built-in's short name
        def forward_backward(self, z, y):
            raise AssertionError("the program's own loss")

    with pytest.raises(ValueError) as err:
        get_loss("SumOfSquares")
    message = str(err.value)
    assert "deepnet.losses.SumOfSquares" in message and f"{__name__}.{SumOfSquares.__qualname__}" in message
    assert "\n" not in message and "loss=SumOfSquares()" in message
    assert type(get_loss("sse")) is dn.losses.SumOfSquares       # an alias stays the built-in's


def test_a_loss_string_two_program_classes_share_is_called_ambiguous_not_unknown():
    def mine():
        class Huber(Loss):
            def forward_backward(self, z, y):
                raise AssertionError
        return Huber

    def theirs():
        class Huber(Loss):
            def forward_backward(self, z, y):
                raise AssertionError
        return Huber

    mine(), theirs()                            # two classes, two qualified names, one short name
    with pytest.raises(ValueError, match=r"^loss 'Huber' is ambiguous: it names .*mine.*Huber and .*theirs.*Huber; "
                                         r"pass the loss itself \(loss=Huber\(\)\) to choose$"):
        get_loss("Huber")
