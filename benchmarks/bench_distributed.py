"""Data-parallel scaling on one machine: samples per second for 1, 2, ... MPI ranks, the
time each step spends reducing gradients, and PyTorch DDP (gloo) on the same processes.

Every rank trains the same network on its shard of random MNIST-shaped data (784 inputs,
10 classes; Adam, softmax cross-entropy), ``--steps`` timed steps after a warm-up of 5.
Rows of the table:

* ``R ranks x 1 thread, batch B``: each rank trains ``B`` rows per step (weak scaling: the
  global batch is R·B).  Efficiency = samples/s ÷ (R × the samples/s of 1 rank × 1 thread
  with batch B);
* ``1 rank x T threads, batch R·B``: one process with the same global batch and all the
  cores, the alternative to R ranks (the issue's "2 ranks x 1 thread against 1 rank x 2
  threads");
* ``comm ms/step``: time a rank spent in the gradient reduction per step (starting it and
  waiting for it: on a loaded machine this includes waiting for the slower rank), and the
  ``allreduce alone`` time of the same flat buffer with the ranks in step (a barrier first);
* ``deepnet-overlap``: the same ranks with 4 MiB buckets started during backward;
* PyTorch DDP with the gloo backend (``--torch``), same ranks, threads and batches.

    python benchmarks/bench_distributed.py [--configs medium,wide] [--ranks 1,2] [--steps 40]
        [--reps 3] [--torch] [--json benchmarks/results-distributed.json]

Each measurement is its own ``mpiexec -n R`` job (``--worker``); repetitions are
interleaved and the median is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {   # the CPU benchmark's medium and wide MLPs (benchmarks/bench_cpu.py)
    "medium": {"sizes": [784, 512, 512, 10], "batch": 128},
    "wide": {"sizes": [784, 2048, 2048, 2048, 10], "batch": 256},
}
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")


# ---------------------------------------------------------------------- one job (each rank)
def worker(framework: str, config: str, batch: int, steps: int, comm_kind: str) -> None:
    from mpi4py import MPI
    world = MPI.COMM_WORLD
    rank, size = world.Get_rank(), world.Get_size()
    cfg = CONFIGS[config]
    n = (steps + 5) * batch * size
    rng = np.random.default_rng(0)
    X = rng.random((n, 784), dtype=np.float32)
    y = rng.integers(0, 10, n)
    if framework == "deepnet":
        result = _deepnet(cfg, X, y, batch, steps, size, comm_kind)
    else:
        result = _torch(cfg, X, y, batch, steps, rank, size)
    every = world.gather(result, root=0)
    if rank == 0:
        seconds = max(r["seconds"] for r in every)
        out = {"samples_per_s": steps * batch * size / seconds, "step_ms": 1e3 * seconds / steps,
               "comm_ms": statistics.mean(r.get("comm_ms", 0.0) for r in every),
               "allreduce_ms": statistics.mean(r.get("allreduce_ms", 0.0) for r in every),
               "gradient_mb": every[0].get("gradient_mb", 0.0)}
        print("RESULT " + json.dumps(out), flush=True)


def _deepnet(cfg: dict, X: np.ndarray, y: np.ndarray, batch: int, steps: int, size: int, comm_kind: str) -> dict:
    from deepnet import Network
    from deepnet.callbacks import Callback
    from deepnet.distributed import MPICommunicator
    from deepnet.presets import mlp_layers

    timing = {"comm": 0.0}

    class Timed(MPICommunicator):
        """MPI whose reductions are timed (start and wait)."""

        def allreduce_start(self, x, op="sum"):
            t = time.perf_counter()
            pending = super().allreduce_start(x, op)
            timing["comm"] += time.perf_counter() - t
            wait = pending.wait

            def timed_wait():
                t0 = time.perf_counter()
                wait()
                timing["comm"] += time.perf_counter() - t0

            pending.wait = timed_wait
            return pending

    comm = Timed() if size > 1 or comm_kind != "none" else None
    if comm is not None and comm_kind == "mpi-overlap":      # buckets of 4 MiB started during backward
        comm.configure(bucket_bytes=4 << 20, overlap=True)
    net = Network(mlp_layers(cfg["sizes"], "relu"), seed=0, loss="xent", optimizer="adam")

    class Clock(Callback):
        def wants_batch_hooks(self):
            return True

        def on_batch_end(self, net, step, logs):
            if step == 5:                 # warm-up done: time from here
                if comm is not None:
                    comm.barrier()
                timing["comm"] = 0.0
                timing["t0"] = time.perf_counter()

    net.fit(X, y, epochs=1, batch_size=batch, communicator=comm, callbacks=[Clock()], graphs="off",
            check_finite="off")
    seconds = time.perf_counter() - timing["t0"]
    out = {"seconds": seconds, "comm_ms": 1e3 * timing["comm"] / steps}
    if comm is not None:
        flat = net.ops.zeros((sum(p.data.size for p in net.parameters().values()),), net.ops.dtype("float32"))
        comm.barrier()
        t = time.perf_counter()
        for _ in range(20):
            comm.allreduce(flat)
        out["allreduce_ms"] = 1e3 * (time.perf_counter() - t) / 20
        out["gradient_mb"] = flat.nbytes / 2**20
    return out


def _torch(cfg: dict, X: np.ndarray, y: np.ndarray, batch: int, steps: int, rank: int, size: int) -> dict:
    import torch
    import torch.distributed as dist
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    torch.manual_seed(0)
    sizes = cfg["sizes"]
    layers: list = []
    for i in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    if size > 1:
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29533")
        dist.init_process_group("gloo", rank=rank, world_size=size)
        model = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    lossf = torch.nn.CrossEntropyLoss()
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    perm = torch.from_numpy(np.random.default_rng(1).permutation(len(X)))
    t0 = 0.0
    for s in range(steps + 5):
        if s == 5:
            if size > 1:
                dist.barrier()
            t0 = time.perf_counter()
        g = s * batch * size + rank * batch
        idx = perm[g:g + batch]
        opt.zero_grad(set_to_none=True)
        loss = lossf(model(Xt[idx]), yt[idx])
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - t0
    if size > 1:
        dist.destroy_process_group()
    return {"seconds": seconds}


# ---------------------------------------------------------------------- the table
def run_job(framework: str, config: str, ranks: int, threads: int, batch: int, steps: int, mpiexec: str) -> dict:
    env = {**os.environ, **{v: str(threads) for v in THREAD_VARS}, "PYTHONPATH": str(ROOT)}
    kind = "none" if ranks == 1 else "mpi"
    if framework == "deepnet-overlap":
        framework, kind = "deepnet", "mpi-overlap"
    cmd = [mpiexec, "-n", str(ranks), sys.executable, __file__, "--worker", framework, config, str(batch),
           str(steps), kind]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    for line in res.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stderr[-3000:]}")


def _versions(mpiexec: str) -> dict:
    """The versions that shape the figures: NumPy, mpi4py, the MPI library, PyTorch."""
    from importlib import metadata
    out = {"numpy": np.__version__}
    for pkg in ("mpi4py", "mpich", "torch"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    probe = subprocess.run([mpiexec, "-n", "1", sys.executable, "-c",
                            "from mpi4py import MPI; print(MPI.Get_library_version().splitlines()[0])"],
                           capture_output=True, text=True, timeout=60)
    out["mpi library"] = probe.stdout.strip() or None
    out["mpiexec"] = mpiexec
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default="medium,wide")
    ap.add_argument("--ranks", default="1,2", help="rank counts (each rank 1 thread)")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--torch", action="store_true", help="also PyTorch DDP (gloo)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from deepnet.distributed.launch import find_mpiexec
    mpiexec = find_mpiexec()
    if mpiexec is None:
        raise SystemExit("no mpiexec found (pip install 'deepnet[mpi]')")
    cores = os.cpu_count() or 1
    ranks = [int(r) for r in args.ranks.split(",")]
    frameworks = ["deepnet"] + (["torch"] if args.torch else [])
    rows = []
    for config in args.configs.split(","):
        b = CONFIGS[config]["batch"]
        jobs = [(fw, r, 1, b) for fw in frameworks for r in ranks]
        jobs += [("deepnet-overlap", r, 1, b) for r in ranks if r > 1]
        jobs += [(fw, 1, min(cores, r), r * b) for fw in frameworks for r in ranks if r > 1]
        samples: dict = {j: [] for j in jobs}
        for _ in range(args.reps):                  # interleaved repetitions
            for job in jobs:
                fw, r, t, batch = job
                samples[job].append(run_job(fw, config, r, t, batch, args.steps, mpiexec))
        base = {fw: statistics.median(s["samples_per_s"] for s in samples[(fw, 1, 1, b)]) for fw in frameworks}
        base["deepnet-overlap"] = base["deepnet"]
        for job in jobs:
            fw, r, t, batch = job
            med = {k: statistics.median(s[k] for s in samples[job]) for k in samples[job][0]}
            row = {"config": config, "framework": fw, "ranks": r, "threads": t, "batch_per_rank": batch,
                   "global_batch": r * batch, **med, "efficiency": med["samples_per_s"] / (r * base[fw])
                   if t == 1 else None}
            rows.append(row)
            print(f"{config:6s} {fw:15s} {r} rank{'s' if r > 1 else ' '} x {t} thread{'s' if t > 1 else ' '} "
                  f"batch {batch:4d}: {med['samples_per_s']:9,.0f} samples/s  step {med['step_ms']:7.2f} ms"
                  + (f"  comm {med['comm_ms']:6.2f} ms/step (allreduce alone {med['allreduce_ms']:.2f} ms, "
                     f"{med['gradient_mb']:.1f} MiB)" if r > 1 and fw.startswith("deepnet") else "")
                  + (f"  efficiency {row['efficiency']:.2f}" if row["efficiency"] is not None else ""), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {cores} cores",
            "python": platform.python_version(), "versions": _versions(mpiexec), "steps": args.steps, "reps": args.reps,
            "command": " ".join(["python", "benchmarks/bench_distributed.py", *sys.argv[1:]]), "rows": rows},
            indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(*sys.argv[2:4], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
    else:
        main()
