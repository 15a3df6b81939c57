"""Host memory of Network.fit (NumPy backend): how many copies of the data set it adds.

Each case runs in a fresh Python process, so that peaks do not mix.  A fit case loads the
MNIST training images (float32 in [0, 1], 60,000 x 784 x 4 B = 179 MiB; "4x" tiles X and
y four times), builds a 784-64-10 network (Dense, ReLU, Dense; loss "xent", optimizer
"sgd" with lr 0.1, seed 0), runs a short warm-up fit on a copy of 1,024 rows with a
separate network (the first fit in a process imports numba, llvmlite and scipy, about
130 MiB here that do not grow with the data; --no-warmup counts them in "added"),
collects garbage, reads the resident set size (VmRSS in /proc/self/status), resets the
peak (writing "5" to /proc/self/clear_refs resets VmHWM; where that is refused, a thread
samples VmRSS every millisecond instead) and runs

    net.fit(X, y, epochs=2, batch_size=128, shuffle=...)

then reads the peak (VmHWM).  "added" is peak - RSS before fit; "copies" is added /
X.nbytes.  The allowance is what fit may legitimately add besides copies of X:

    parameters x (1 weight + 1 gradient + optimizer slots) x itemsize
    + 4 batch buffers per layer boundary: 4 x batch_size x sum(widths) x 8 bytes

(for 784-64-10, SGD, batch 128: 50,890 x 2 x 4 B + 4 x 128 x 858 x 8 B = 3.7 MiB, 0.02
copies of MNIST).  "beyond" = (added - allowance) / X.nbytes; issue 14 asks for at most
0.25 with shuffling.  Per-sample vectors (labels, permutation, predictions: a few int64 per
row, 0.003 copies each) are not in the allowance.

The CLI case writes a 4x MNIST .npz (x_train float32 in [0, 1] as the npz loader uses
values as they are in the file, y_train int64, and the MNIST test set as x_test/y_test)
into the work folder, runs ``python -m deepnet train --dataset npz --data FILE`` with the
same network, optimizer, epochs and batch size (other options at their defaults: 10 %
held out for validation, shuffling) and reports the child's peak RSS (ru_maxrss from
wait4).

    DEEPNET_MNIST=/work/shared/data/mnist python benchmarks/bench_memory.py
        [--cases mnist-shuffle,mnist-noshuffle,4x-shuffle,4x-noshuffle,cli-4x]
        [--src OTHER_CHECKOUT] [--workdir /tmp/deepnet-bench-memory] [--threads N]
        [--no-warmup] [--json results.json]

``--src DIR`` puts DIR first on the PYTHONPATH of the child processes (each reports the
deepnet it imported), so this script measures another checkout, e.g. one made with
``git worktree add /tmp/base COMMIT``.  Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

MiB = 1 << 20   # the "MB" (X of MNIST: 179 MiB)
SIZES = [784, 64, 10]
EPOCHS, BATCH, LR, SEED = 2, 128, 0.1, 0
FIT_CASES = {                      # name: (tiles of MNIST, shuffle)
    "mnist-shuffle": (1, True),
    "mnist-noshuffle": (1, False),
    "4x-shuffle": (4, True),
    "4x-noshuffle": (4, False),
}
ALL_CASES = [*FIT_CASES, "cli-4x"]
WARMUP_ROWS = 1024
BUFFERS_PER_BOUNDARY = 4           # forward output, cached input, backward error, one temporary
BUFFER_ITEMSIZE = 8                # room for float64 temporaries


# ---------------------------------------------------------------- /proc readings
def proc_status(key: str) -> int:
    """A size from /proc/self/status (``VmRSS``, ``VmHWM``), in bytes."""
    with open("/proc/self/status") as fh:
        m = re.search(rf"^{key}:\s+(\d+) kB", fh.read(), re.MULTILINE)
    if m is None:
        raise RuntimeError(f"no {key} in /proc/self/status (this benchmark needs Linux)")
    return int(m.group(1)) * 1024


class PeakMeter:
    """The peak RSS from now on: VmHWM after resetting it, or a sampling thread where the
    kernel refuses the reset."""

    def __init__(self) -> None:
        self.method = "VmHWM after clear_refs"
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            ok = proc_status("VmHWM") <= proc_status("VmRSS") + (1 << 20)
        except OSError:
            ok = False
        self._stop = threading.Event()
        self._peak = proc_status("VmRSS")
        self._thread = None
        if not ok:
            self.method = "VmRSS sampled every 1 ms"
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self._peak = max(self._peak, proc_status("VmRSS"))

    def peak(self) -> int:
        if self._thread is None:
            return proc_status("VmHWM")
        self._stop.set()
        self._thread.join()
        return max(self._peak, proc_status("VmRSS"))


# ---------------------------------------------------------------- the worker side
def load_mnist(folder: str, tiles: int) -> tuple[Any, Any]:
    import numpy as np

    from deepnet.datasets import load_mnist_folder

    (X, y), _ = load_mnist_folder(folder, scale="unit")
    if tiles > 1:
        X, y = np.concatenate([X] * tiles), np.concatenate([y] * tiles)
    return np.ascontiguousarray(X, dtype=np.float32), y


def build_network() -> Any:
    import deepnet as dn

    layers: list[Any] = []
    for i, (a, b) in enumerate(itertools.pairwise(SIZES)):
        layers.append(dn.Dense(a, b))
        if i < len(SIZES) - 2:
            layers.append(dn.ReLU())
    return dn.Network(layers, seed=SEED, backend="numpy")


def allowance(net: Any, batch_size: int) -> dict[str, int]:
    """Bytes fit may add besides copies of X: model, gradients, optimizer state, batch buffers."""
    import numpy as np

    n_params = int(net.n_params)
    itemsize = np.dtype(net.dtype_name).itemsize
    opt = net.optimizer
    slots = len(getattr(opt, "slots", ()))
    state = getattr(opt, "state", {}) or {}
    state_bytes = sum(int(getattr(a, "nbytes", 0)) for st in state.values() for a in st.values())
    model = n_params * itemsize
    grads = n_params * itemsize
    opt_bytes = max(slots * n_params * itemsize, state_bytes)
    batch = BUFFERS_PER_BOUNDARY * batch_size * sum(SIZES) * BUFFER_ITEMSIZE
    return {"n_params": n_params, "itemsize": itemsize, "optimizer_slots": slots, "model_bytes": model,
            "gradient_bytes": grads, "optimizer_state_bytes": opt_bytes, "batch_buffer_bytes": batch,
            "total_bytes": model + grads + opt_bytes + batch}


def run_fit_case(name: str, folder: str, warmup: bool) -> dict[str, Any]:
    import numpy as np

    import deepnet as dn

    tiles, shuffle = FIT_CASES[name]
    X, y = load_mnist(folder, tiles)
    gc.collect()
    rss_after_load = proc_status("VmRSS")
    if warmup:   # another network on other memory: lazy imports, BLAS buffers, first-call caches
        w = build_network()
        w.fit(np.array(X[:WARMUP_ROWS]), np.array(y[:WARMUP_ROWS]), epochs=1, batch_size=BATCH,
              loss="xent", optimizer=dn.SGD(lr=LR), shuffle=shuffle)
        del w
    net = build_network()
    gc.collect()
    rss_before = proc_status("VmRSS")
    meter = PeakMeter()
    t0 = time.perf_counter()
    hist = net.fit(X, y, epochs=EPOCHS, batch_size=BATCH, loss="xent", optimizer=dn.SGD(lr=LR),
                   shuffle=shuffle)
    seconds = time.perf_counter() - t0
    peak = meter.peak()
    allow = allowance(net, BATCH)
    added = peak - rss_before
    return {
        "case": name, "tiles": tiles, "shuffle": shuffle, "rows": int(X.shape[0]), "x_bytes": int(X.nbytes),
        "y_bytes": int(y.nbytes), "rss_after_load_bytes": rss_after_load, "rss_before_fit_bytes": rss_before,
        "peak_during_fit_bytes": peak, "added_bytes": added, "added_copies": added / X.nbytes,
        "allowance": allow, "beyond_allowance_copies": (added - allow["total_bytes"]) / X.nbytes,
        "peak_method": meter.method, "warmup": warmup, "fit_seconds": seconds,
        "final_loss": float(hist.history["loss"][-1]), "deepnet_file": dn.__file__,
    }


def make_npz(folder: str, path: str) -> dict[str, Any]:
    """Write the 4x MNIST .npz the CLI case trains on (uncompressed; float32 x in [0, 1])."""
    import numpy as np

    from deepnet.datasets import load_mnist_folder

    (X, y), (Xt, yt) = load_mnist_folder(folder, scale="unit")
    tmp = path + ".part.npz"
    np.savez(tmp, x_train=np.concatenate([X] * 4), y_train=np.concatenate([y] * 4), x_test=Xt, y_test=yt)
    os.replace(tmp, path)
    return {"npz": path, "npz_bytes": os.path.getsize(path), "x_train_bytes": 4 * X.nbytes}


# ---------------------------------------------------------------- the driver side
def child_env(src: str | None, threads: int | None) -> dict[str, str]:
    env = dict(os.environ, DEEPNET_BACKEND="numpy")
    if src:
        env["PYTHONPATH"] = os.pathsep.join([os.path.abspath(src), *filter(None, [env.get("PYTHONPATH")])])
    if threads:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
    return env


def run_worker(args: argparse.Namespace, job: list[str]) -> dict[str, Any]:
    """Run this script in a fresh process for one job; its last stdout line is the JSON result."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", *job, "--mnist", args.mnist]
    if args.no_warmup:
        cmd.append("--no-warmup")
    proc = subprocess.run(cmd, env=child_env(args.src, args.threads), cwd=args.workdir,
                          capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"worker {job} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_cli_case(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(args.workdir)
    npz = workdir / "mnist4x.npz"
    made = None
    if not npz.is_file():
        made = run_worker(args, ["make-npz", str(npz)])
    env = child_env(args.src, args.threads)
    which = subprocess.run([sys.executable, "-c", "import deepnet; print(deepnet.__file__)"], env=env,
                           cwd=workdir, capture_output=True, text=True, check=True).stdout.strip()
    out = workdir / "cli-out"
    shutil.rmtree(out, ignore_errors=True)          # ours: a fresh folder each run (no kept earlier models)
    cmd = [sys.executable, "-m", "deepnet", "train", "--dataset", "npz", "--data", str(npz),
           "--layers", "-".join(map(str, SIZES)), "--activation", "relu", "--loss", "xent",
           "--optimizer", "sgd", "--lr", str(LR), "--epochs", str(EPOCHS), "--batch-size", str(BATCH),
           "--seed", str(SEED), "--backend", "numpy", "--out", str(out), "--quiet"]
    log = workdir / "cli-train.log"
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        # cwd is the work folder, so `-m deepnet` imports the deepnet on PYTHONPATH (or installed)
        proc = subprocess.Popen(cmd, env=env, cwd=workdir, stdout=fh, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"deepnet train failed ({proc.returncode}); see {log}:\n{log.read_text()[-3000:]}")
    x_bytes = 4 * 60000 * 784 * 4
    peak = usage.ru_maxrss * 1024       # kilobytes on Linux
    return {"case": "cli-4x", "command": cmd, "npz": str(npz), "npz_bytes": npz.stat().st_size,
            "x_bytes": x_bytes, "peak_rss_bytes": peak, "peak_copies_of_x": peak / x_bytes,
            "seconds": seconds, "deepnet_file": which, "made_npz": made,
            "output_tail": log.read_text().strip().splitlines()[-1:]}


def fmt_mb(b: float) -> str:
    return f"{b / MiB:9.1f}"


def print_table(results: list[dict[str, Any]]) -> None:
    fits = [r for r in results if r["case"] in FIT_CASES]
    if fits:
        a = fits[0]["allowance"]
        weights = a["model_bytes"] + a["gradient_bytes"] + a["optimizer_state_bytes"]
        print(f"\nallowance: {a['n_params']:,} parameters x {a['itemsize']} B x (1 weight + 1 gradient + "
              f"{a['optimizer_slots']} optimizer slots) = {weights / MiB:.2f} MiB + batch buffers "
              f"{BUFFERS_PER_BOUNDARY} x {BATCH} x {sum(SIZES)} x {BUFFER_ITEMSIZE} B = "
              f"{a['batch_buffer_bytes'] / MiB:.2f} MiB; total {a['total_bytes'] / MiB:.2f} MiB")
        print(f"peak measured by: {fits[0]['peak_method']}; warm-up fit: {fits[0]['warmup']}")
        if fits[0]["warmup"]:
            left = ", ".join(f"{r['case']} {(r['rss_before_fit_bytes'] - r['rss_after_load_bytes']) / MiB:.1f} MiB"
                             for r in fits)
            print(f"RSS fit0 - RSS load = what the warm-up fit left resident (first-fit imports such as numba "
                  f"and scipy, the network): {left}")
        print()
        head = (f"{'case':16s} {'X MiB':>9s} {'RSS load':>9s} {'RSS fit0':>9s} {'peak fit':>9s} {'added':>9s} "
                f"{'copies':>7s} {'allow MiB':>9s} {'beyond':>7s} {'fit s':>6s}")
        print(head)
        print("-" * len(head))
        for r in fits:
            print(f"{r['case']:16s} {fmt_mb(r['x_bytes'])} {fmt_mb(r['rss_after_load_bytes'])} "
                  f"{fmt_mb(r['rss_before_fit_bytes'])} {fmt_mb(r['peak_during_fit_bytes'])} "
                  f"{fmt_mb(r['added_bytes'])} "
                  f"{r['added_copies']:7.2f} {fmt_mb(r['allowance']['total_bytes'])} "
                  f"{r['beyond_allowance_copies']:7.2f} {r['fit_seconds']:6.1f}")
    for r in results:
        if r["case"] == "cli-4x":
            print(f"\ncli-4x: npz {r['npz_bytes'] / MiB:.1f} MiB (x_train {r['x_bytes'] / MiB:.1f} MiB float32); "
                  f"peak RSS of `deepnet train` {r['peak_rss_bytes'] / MiB:.1f} MiB = {r['peak_copies_of_x']:.2f} x "
                  f"x_train ({r['seconds']:.1f} s)")
    srcs = sorted({r.get("deepnet_file", "") for r in results})
    print(f"\ndeepnet imported from: {', '.join(srcs)}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default=",".join(ALL_CASES), help=f"comma-separated, from {','.join(ALL_CASES)}")
    p.add_argument("--mnist", default=os.environ.get("DEEPNET_MNIST"),
                   help="folder with the MNIST IDX files (default $DEEPNET_MNIST)")
    p.add_argument("--src", default=None, help="a checkout to measure: put first on the children's PYTHONPATH")
    p.add_argument("--workdir", default=os.path.join("/tmp", "deepnet-bench-memory"),
                   help="folder for the CLI case's .npz (reused if present) and output")
    p.add_argument("--threads", type=int, default=None, help="OMP/OpenBLAS/MKL threads in the children")
    p.add_argument("--no-warmup", action="store_true", help="no warm-up fit before the measured one")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--worker", nargs="+", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not args.mnist or not os.path.isdir(args.mnist):
        p.error("give the MNIST folder with --mnist or DEEPNET_MNIST (real data is needed)")

    if args.worker:                              # inside a fresh child process
        job = args.worker
        result = make_npz(args.mnist, job[1]) if job[0] == "make-npz" else run_fit_case(job[0], args.mnist,
                                                                                         not args.no_warmup)
        print(json.dumps(result))
        return 0

    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in ALL_CASES]
    if unknown:
        p.error(f"unknown cases {unknown}: expected some of {ALL_CASES}")
    os.makedirs(args.workdir, exist_ok=True)
    results = []
    for case in cases:
        print(f"running {case} ...", flush=True)
        results.append(run_cli_case(args) if case == "cli-4x" else run_worker(args, [case]))
    print_table(results)
    if args.json:
        import numpy as np

        src = args.src or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        commit = subprocess.run(["git", "-C", src, "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=False).stdout.strip() or None
        meta = {"src_commit": commit, "warmup": not args.no_warmup, "python": platform.python_version(), "numpy": np.__version__, "machine": platform.machine(),
                "cpus": os.cpu_count(), "src": args.src, "threads": args.threads,
                "date": time.strftime("%Y-%m-%d %H:%M:%S"), "network": "-".join(map(str, SIZES)),
                "epochs": EPOCHS, "batch_size": BATCH, "optimizer": f"sgd lr {LR}", "loss": "xent"}
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "results": results}, fh, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
