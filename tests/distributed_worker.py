"""One rank of the data-parallel tests (tests/test_distributed.py starts it with mpiexec).

``python tests/distributed_worker.py SCENARIO OUT``: ``equivalence`` trains every case of
:data:`CASES` with the ranks of this job and rank 0 writes its weights and history to
``OUT/<case>.npz``; ``fail-raise`` / ``fail-kill``: rank 1 fails at its 5th step (an
exception, or SIGKILL) in a run that would otherwise take minutes; ``mismatch-lr`` /
``mismatch-buckets``: rank 1 is given another learning rate or bucket size; ``stop-one``: a
callback stops rank 0 alone; ``resume-exact``: a mid-epoch stop and resume (dropout, local
BatchNorm) against the uninterrupted run; ``nccl`` / ``mpi-cupy``: on GPUs.
"""

from __future__ import annotations

import json
import os
import signal
import sys

import numpy as np

from deepnet import Network
from deepnet.backend import BackendError, get_ops
from deepnet.callbacks import Callback
from deepnet.layers import BatchNorm, Conv2D, Dense, Flatten, ReLU, Reshape, Residual, Sequential, Tanh
from deepnet.optimizers import get_optimizer

# (name, model, optimizer, dtype, backend, bucket_bytes, overlap)
CASES = [(f"{model}-{opt}-{dtype}", model, opt, dtype, "numpy", None, False)
         for model in ("mlp", "bn") for opt in ("sgd", "momentum", "adam") for dtype in ("float64", "float32")]
CASES += [("conv-bn-adam-float64", "conv", "adam", "float64", "numpy", None, False),
          ("conv-images-adam-float64", "conv-images", "adam", "float64", "numpy", None, False),
          ("residual-momentum-float64", "residual", "momentum", "float64", "numpy", None, False),
          ("residual-adam-float64-buckets-overlap", "residual", "adam", "float64", "numpy", 512, True),
          ("bn-adam-float64-buckets-overlap", "bn", "adam", "float64", "numpy", 256, True),
          ("bn-momentum-float64-cupy-shaped", "bn", "momentum", "float64", "cupy-shaped", None, False)]
#: per-rank batch; 2 ranks × B rows per step equal one process with 2B.  N rows: 25 full
#: global batches and a short one of 10 (5 per rank): 52 steps in 2 epochs
B, N, EPOCHS = 10, 510, 2


def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    X = rng.normal(size=(N, 36))
    y = (X[:, :4].sum(axis=1) > 0).astype(int) + 2 * (X[:, 4] > 0)
    return X, y


def inputs(model: str, X: np.ndarray) -> np.ndarray:
    """The inputs a case's network takes: rows, or (n, 1, 6, 6) images (a view) for "conv-images" and "residual"."""
    return X.reshape(len(X), 1, 6, 6) if model in ("conv-images", "residual") else X


def build(model: str, opt: str, dtype: str, backend: str = "numpy") -> Network:
    """The network of a case (seed 5), with its optimizer."""
    if model == "mlp":
        layers = [Dense(36, 24), Tanh(), Dense(24, 16), ReLU(), Dense(16, 4)]
    elif model == "bn":
        layers = [Dense(36, 24, bias=False), BatchNorm(24), ReLU(), Dense(24, 4)]   # no bias before BN: its gradient is 0
    elif model == "residual":        # a block of layers: stride-2 projection shortcut, BatchNorm in both paths
        block = Sequential([Conv2D(3, 4, 3, stride=2, padding=1, bias=False), BatchNorm(4), ReLU(),
                            Conv2D(4, 4, 3, padding=1, bias=False), BatchNorm(4)])
        shortcut = Sequential([Conv2D(3, 4, 1, stride=2, bias=False), BatchNorm(4)])
        layers = [Conv2D(1, 3, 3, padding=1, bias=False), BatchNorm(3), ReLU(),
                  Residual(block, shortcut=shortcut), ReLU(), Flatten(), Dense(36, 4)]
    elif model == "conv-images":     # images in directly: no Reshape
        layers = [Conv2D(1, 3, 3, padding=1, bias=False), BatchNorm(3), ReLU(), Flatten(), Dense(108, 4)]
    else:
        layers = [Reshape((1, 6, 6)), Conv2D(1, 3, 3, padding=1, bias=False), BatchNorm(3), ReLU(), Flatten(), Dense(108, 4)]
    lr = {"sgd": 0.1, "momentum": 0.05, "adam": 0.01}[opt]
    optimizer = {"sgd": "sgd", "momentum": "momentum", "adam": "adam"}[opt]
    return Network(layers, seed=5, dtype=dtype, backend=backend, loss="xent", optimizer=get_optimizer(optimizer, lr=lr))


def _unavailable(backend: str) -> str | None:
    """Why ``backend`` cannot be created here (the CuPy-shaped one needs the cupy package), or None."""
    try:
        get_ops(backend)
    except BackendError as err:
        return str(err)
    return None


def equivalence(out: str) -> None:
    from deepnet.distributed import MPICommunicator
    X, y = data()
    for name, model, opt, dtype, backend, bucket_bytes, overlap in CASES:
        reason = _unavailable(backend)
        if reason is not None:       # its test skips with the same reason (tests/conftest.py)
            print(f"{name}: left out, {reason}", flush=True)
            continue
        comm = MPICommunicator().configure(bucket_bytes=bucket_bytes, overlap=overlap)
        net = build(model, opt, dtype, backend)
        hist = net.fit(inputs(model, X), y, epochs=EPOCHS, batch_size=B, communicator=comm,
                       sync_batchnorm=model != "mlp")
        if comm.rank == 0:
            np.savez(os.path.join(out, f"{name}.npz"), **net.get_weights(),
                     __history__=np.array(json.dumps(hist.history)), __transport__=np.array(comm.transport))


class FailAt(Callback):
    def __init__(self, rank: int, how: str) -> None:
        self.rank, self.how = rank, how

    def wants_batch_hooks(self) -> bool:
        return True

    def on_batch_end(self, net, step, logs) -> None:
        if self.rank == 1 and step == 5:
            if self.how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError("rank 1 failed on purpose at step 5")


def failing(how: str) -> None:
    from deepnet.distributed import MPICommunicator
    comm = MPICommunicator()
    X, y = data()
    net = build("mlp", "sgd", "float32")
    net.fit(np.tile(X, (200, 1)), np.tile(y, 200), epochs=1000, batch_size=B, communicator=comm,
            callbacks=[FailAt(comm.rank, how)])


def mismatch(what: str) -> None:
    """Rank 1 is given another learning rate, or another bucket size (which would pair the
    ranks' reductions wrongly: detected at the start)."""
    from deepnet.distributed import MPICommunicator
    comm = MPICommunicator()
    X, y = data()
    net = build("mlp", "sgd", "float32")
    if what == "lr":
        net.optimizer = get_optimizer("sgd", lr=0.1 if comm.rank == 0 else 0.2)
    else:
        comm.configure(bucket_bytes=256 if comm.rank == 0 else 1 << 20)
    net.fit(X, y, epochs=1, batch_size=B, communicator=comm)


class StopOn(Callback):
    """Stops the run at ``step`` on rank ``rank`` only (as a callback deciding from this
    rank's own batch loss could)."""

    def __init__(self, rank: int, step: int) -> None:
        self.rank, self.step = rank, step

    def wants_batch_hooks(self) -> bool:
        return True

    def on_batch_end(self, net, step, logs) -> None:
        if step == self.step and self.rank == 0:
            net.stop_training, net.stop_reason = True, "stopped by rank 0"


def stop_one() -> None:
    """Rank 0 alone stops at step 7: every rank stops there (no rank waits in a reduction)."""
    from deepnet.distributed import MPICommunicator
    comm = MPICommunicator()
    X, y = data()
    net = build("mlp", "sgd", "float32")
    net.fit(X, y, epochs=3, batch_size=B, communicator=comm, callbacks=[StopOn(comm.rank, 7)])
    steps = comm.allgather_object((net.step_count, net.stop_reason))
    if comm.rank == 0:
        print(f"stopped at {steps}", flush=True)
        if steps != [(7, "stopped by rank 0")] * comm.size:
            raise SystemExit(f"ranks stopped at different steps: {steps}")


def callbacks_differ() -> None:
    """Rank 0 alone has a per-batch callback; rank 1 alone stops in on_epoch_begin of epoch 2:
    the ranks stay in step and stop together."""
    from deepnet.callbacks import LambdaCallback
    from deepnet.distributed import MPICommunicator
    comm = MPICommunicator()
    X, y = data()
    net = build("mlp", "sgd", "float32")

    def stop(net, epoch, logs):
        if epoch == 1:
            net.stop_training, net.stop_reason = True, "rank 1 stopped at epoch 2"

    mine = ([LambdaCallback(on_batch_end=lambda net, step, logs: None)] if comm.rank == 0 else
            [LambdaCallback(on_epoch_begin=stop)])
    net.fit(X, y, epochs=4, batch_size=B, communicator=comm, callbacks=mine)
    steps = comm.allgather_object((net.step_count, net.stop_reason))
    if comm.rank == 0:
        print(f"stopped at {steps}", flush=True)
        if len(set(steps)) != 1:
            raise SystemExit(f"ranks stopped at different steps: {steps}")


def callbacks_change_one_rank(what: str) -> None:
    """Rank 1 alone has a learning-rate schedule (``lr``), or rank 0 alone restores its best
    weights at the end (``weights``): refused, naming what differs."""
    from deepnet.callbacks import EarlyStopping
    from deepnet.distributed import MPICommunicator
    from deepnet.schedules import LearningRateScheduler, get_schedule
    comm = MPICommunicator()
    X, y = data()
    net = build("mlp", "sgd", "float32")
    if what == "lr":
        mine = [LearningRateScheduler(get_schedule("cosine", 0.1, 3))] if comm.rank == 1 else []
    else:
        # "max": the first epoch is the best, so rank 0 puts back older weights at the end
        mine = [EarlyStopping("loss", patience=100, mode="max", restore_best=True)] if comm.rank == 0 else []
    net.fit(X, y, epochs=3, batch_size=B, communicator=comm, callbacks=mine)


def resume_exact(out: str) -> None:
    """A run with dropout and local BatchNorm stopped at step 30 (mid-epoch) and resumed equals
    the uninterrupted run, on every rank, bit for bit (weights and running statistics)."""
    from deepnet.distributed import MPICommunicator
    from deepnet.layers import Dropout
    comm = MPICommunicator()
    X, y = data()

    def net() -> Network:
        return Network([Dense(36, 24, bias=False), BatchNorm(24), ReLU(), Dropout(0.3), Dense(24, 4)], seed=5,
                       dtype="float64", loss="xent", optimizer=get_optimizer("adam", lr=0.01))

    ref = net()
    ref_hist = ref.fit(X, y, epochs=3, batch_size=B, communicator=comm)
    first = net()
    first.fit(X, y, epochs=3, batch_size=B, communicator=comm, checkpoint=out, callbacks=[StopOn(0, 30)])
    again = net()
    hist = again.fit(X, y, epochs=3, batch_size=B, communicator=comm, checkpoint=out, resume=True)
    a, b = again.get_weights(), ref.get_weights()
    same = all(np.array_equal(a[k], b[k]) for k in a) and np.array_equal(again.layers[1].running_var,
                                                                          ref.layers[1].running_var)
    same = same and all(np.allclose(hist.history[k], ref_hist.history[k], rtol=1e-12, atol=0)
                        for k in ("loss", "accuracy", "val_loss") if k in ref_hist.history)
    every = comm.allgather_object(same)
    if comm.rank == 0:
        print(f"resumed equals uninterrupted on every rank: {every}", flush=True)
        if not all(every):
            raise SystemExit(f"a resumed rank differs from the uninterrupted run: {every}")


def against_one_process(comm, backend: str) -> float:
    """The largest weight difference between ``comm``'s ranks (batch B each) and one process
    with the global batch, for an MLP with Adam and a synced-BatchNorm MLP with momentum
    (float64; computed on rank 0, 0.0 elsewhere)."""
    X, y = data()
    worst = 0.0
    for model, opt in (("mlp", "adam"), ("bn", "momentum")):
        net = build(model, opt, "float64", backend)
        net.fit(X, y, epochs=EPOCHS, batch_size=B, communicator=comm, sync_batchnorm=model == "bn")
        if comm.rank == 0:
            ref = build(model, opt, "float64", backend)
            ref.fit(X, y, epochs=EPOCHS, batch_size=comm.size * B)
            a, b = net.get_weights(), ref.get_weights()
            worst = max(worst, max(float(np.abs(a[k] - b[k]).max()) for k in a))
    return worst


def on_gpus(kind: str) -> None:
    """``nccl``: NCCL, one GPU per rank; ``mpi-cupy``: MPI with CuPy arrays (staged or
    CUDA-aware), every rank on GPU 0.  Rank 0 then trains one process with the global batch
    and checks the weights (float64: 1e-10)."""
    from deepnet.backend import get_ops
    from deepnet.distributed import MPICommunicator, NCCLCommunicator, use_local_gpu
    ops = get_ops("cupy")
    mpi = MPICommunicator()
    if kind == "nccl":
        use_local_gpu(mpi, ops)
        comm = NCCLCommunicator(bootstrap=mpi)
    else:
        comm = mpi
    worst = against_one_process(comm, "cupy")
    if comm.rank == 0:
        print(f"{kind}: {comm.describe()}: max weight difference {worst:.3e}", flush=True)
        if not worst <= 1e-10:
            raise SystemExit(f"{kind}: 2 ranks differ from one process by {worst:.3e} > 1e-10")


def nccl_shaped() -> None:
    """The NCCL communicator's code path on the CuPy-shaped backend, with a stand-in for
    ``cupy.cuda.nccl`` (tests/fake_nccl.py) that has its signatures and reduces over MPI: 2 ranks
    against one process with the global batch, float64 within 1e-10."""
    from deepnet.backend import get_ops
    from deepnet.distributed import MPICommunicator, NCCLCommunicator
    from tests import fake_nccl
    ops = get_ops("cupy-shaped")
    comm = NCCLCommunicator(bootstrap=MPICommunicator(), nccl=fake_nccl.as_module(), cupy=ops.xp)
    worst = against_one_process(comm, "cupy-shaped")
    calls = {name for name, _, _, stream in fake_nccl.calls if stream != 0}
    if comm.rank == 0:
        print(f"nccl-shaped: {comm.describe()}: max weight difference {worst:.3e}; calls on a side stream: "
              f"{sorted(calls)}", flush=True)
        if not worst <= 1e-10:
            raise SystemExit(f"nccl-shaped: 2 ranks differ from one process by {worst:.3e} > 1e-10")


if __name__ == "__main__":
    scenario = sys.argv[1]
    if scenario == "equivalence":
        equivalence(sys.argv[2])
    elif scenario in ("fail-raise", "fail-kill"):
        failing(scenario.split("-")[1])
    elif scenario.startswith("mismatch-"):
        mismatch(scenario.split("-")[1])
    elif scenario == "stop-one":
        stop_one()
    elif scenario == "callbacks-differ":
        callbacks_differ()
    elif scenario.startswith("one-rank-changes-"):
        callbacks_change_one_rank(scenario.rsplit("-", 1)[1])
    elif scenario == "resume-exact":
        resume_exact(sys.argv[2])
    elif scenario in ("nccl", "mpi-cupy"):
        on_gpus(scenario)
    elif scenario == "nccl-shaped":
        nccl_shaped()
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")
