"""GPU benchmark: deepnet on CuPy against PyTorch eager on the same device, data resident
on the device for both, float32, TF32 off.  Also the cuBLAS floor for the wide network.

    PYTHONPATH=. python benchmarks/bench_gpu.py --json gpu.json          # on a GPU machine
    PYTHONPATH=. python benchmarks/bench_gpu.py --dry-run                # CPU: tiny sizes, numpy

Configurations (from the GPU issue): medium 784-512-512-10 ReLU, softmax cross-entropy,
Adam, batch 128, one MNIST-sized epoch; seed 784-50-10 per sample; wide 4 hidden layers
of 4096, batch 4096, against only its matrix products run through cuBLAS.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

import deepnet as dn
from deepnet.presets import mlp_layers, seed_layers

CONFIGS = {
    "medium": dict(spec="784-512-512-10", batch=128, samples=60000, opt="adam"),
    "seed": dict(spec=None, batch=1, samples=5000, opt="sgd"),
    "wide": dict(spec="784-4096-4096-4096-4096-10", batch=4096, samples=40960, opt="adam"),
}


def _sync(backend: str) -> None:
    if backend == "cupy":
        import cupy
        cupy.cuda.get_current_stream().synchronize()


def bench_deepnet(name: str, backend: str, X, y, reps: int) -> list[float]:
    c = CONFIGS[name]
    layers = seed_layers() if c["spec"] is None else mlp_layers(c["spec"], "relu")
    loss = dn.SumOfSquares() if c["spec"] is None else dn.SoftmaxCrossEntropy()
    opt = dn.SGD(0.1) if c["opt"] == "sgd" else dn.Adam(1e-3)
    net = dn.Network(layers, seed=0, backend=backend, loss=loss, optimizer=opt)
    Xd, yd = dn.to_device(X, net.ops), dn.to_device(y, net.ops, dtype="int64")    # resident on the device
    net.fit(Xd[: c["batch"] * 4], yd[: c["batch"] * 4], epochs=1, batch_size=c["batch"], shuffle=False)
    out = []
    for _ in range(reps):
        _sync(backend)
        t0 = time.perf_counter()
        net.fit(Xd, yd, epochs=1, batch_size=c["batch"], shuffle=False, check_finite="off")
        _sync(backend)
        out.append(len(X) / (time.perf_counter() - t0))
    return out


def bench_torch(name: str, device: str, X, y, reps: int) -> list[float] | None:
    try:
        import torch
    except ImportError:
        return None
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    c = CONFIGS[name]
    sizes = [784, 50, 10] if c["spec"] is None else [int(s) for s in c["spec"].split("-")]
    mods = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        mods.append(torch.nn.Linear(a, b, bias=c["spec"] is not None))
        if i < len(sizes) - 2 or c["spec"] is None:
            mods.append(torch.nn.Sigmoid() if c["spec"] is None else torch.nn.ReLU())
    model = torch.nn.Sequential(*mods).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1) if c["opt"] == "sgd" else torch.optim.Adam(model.parameters(), 1e-3)
    Xt = torch.from_numpy(X).to(device)
    yt = torch.from_numpy(y.astype(np.int64)).to(device)
    T = torch.nn.functional.one_hot(yt, 10).float() * 0.98 + 0.01
    ce = torch.nn.CrossEntropyLoss()
    B = c["batch"]

    def epoch():
        for s in range(0, len(X), B):
            opt.zero_grad(set_to_none=True)
            z = model(Xt[s:s + B])
            loss = ((z - T[s:s + B]) ** 2).sum() if c["spec"] is None else ce(z, yt[s:s + B])
            loss.backward()
            opt.step()

    epoch()
    out = []
    for _ in range(reps):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        epoch()
        if device == "cuda":
            torch.cuda.synchronize()
        out.append(len(X) / (time.perf_counter() - t0))
    return out


def bench_blas_floor(name: str, backend: str, n: int, reps: int) -> list[float]:
    """Only the matrix products of each step (forward, ∂W, ẽ), through the backend's BLAS."""
    ops = dn.backend.get_ops(backend)
    c = CONFIGS[name]
    sizes = [int(s) for s in c["spec"].split("-")]
    B = c["batch"]
    rng = np.random.default_rng(0)
    Ws = [dn.to_device(rng.random((o, i), dtype=np.float32), ops) for i, o in zip(sizes[:-1], sizes[1:], strict=True)]
    acts = [dn.to_device(rng.random((B, k), dtype=np.float32), ops) for k in sizes]
    out = []
    for _ in range(reps + 1):
        _sync(backend)
        t0 = time.perf_counter()
        for _ in range(n // B):
            for i, W in enumerate(Ws):
                acts[i + 1] = ops.gemm(acts[i], W, trans_b=True)
            for i in range(len(Ws) - 1, -1, -1):
                ops.gemm(acts[i + 1], acts[i], trans_a=True)
                if i > 0:
                    ops.gemm(acts[i + 1], Ws[i])
        _sync(backend)
        out.append(n / (time.perf_counter() - t0))
    return out[1:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="cupy")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dry-run", action="store_true", help="CPU: numpy backend, tiny sample counts")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    backend, device = ("numpy", "cpu") if args.dry_run else (args.backend, "cuda")
    results = {}
    for name, c in CONFIGS.items():
        n = c["batch"] * (2 if args.dry_run else max(1, c["samples"] // c["batch"]))
        if args.dry_run and name == "wide":
            CONFIGS[name] = dict(c, spec="784-64-64-10", batch=32)
            c = CONFIGS[name]
            n = c["batch"] * 2
        rng = np.random.default_rng(0)
        X, y = rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n)
        r = {"deepnet": bench_deepnet(name, backend, X, y, args.reps), "torch": bench_torch(name, device, X, y, args.reps)}
        if name == "wide":
            r["blas_floor"] = bench_blas_floor(name, backend, n, args.reps)
        results[name] = r
    print("\n| config | deepnet samples/s | PyTorch eager samples/s | ratio | BLAS floor | deepnet / floor |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        d = statistics.median(r["deepnet"])
        t = statistics.median(r["torch"]) if r["torch"] else None
        f = statistics.median(r["blas_floor"]) if "blas_floor" in r else None
        print(f"| {name} | {d:,.0f} | {'n/a' if t is None else f'{t:,.0f}'} | {'n/a' if t is None else f'{d / t:.2f}'} | "
              f"{'' if f is None else f'{f:,.0f}'} | {'' if f is None else f'{d / f:.2f}'} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"backend": backend, "dry_run": args.dry_run, "results": results}, fh, indent=2)


if __name__ == "__main__":
    main()
