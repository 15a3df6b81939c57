"""CPU training speed of the preset CNNs: deepnet (NumPy backend) against PyTorch, one process each.

``--preset cnn`` (default) is ``deepnet.presets.cnn_layers((28, 28), 10)``, the Keras "simple
MNIST convnet": conv 3×3 (32) → ReLU → max-pool 2 → conv 3×3 (64) → ReLU → max-pool 2 →
flatten → dropout 0.5 → dense 1600 → 10.  ``--preset resnet`` is
``deepnet.presets.resnet_layers((1, 28, 28), 10, depth=--depth)`` (ResNet-20 by default: conv
3×3 (16) → BN → ReLU → three stages of basic blocks of 3×3 convolutions with BatchNorm, 16, 32
and 64 channels, the first block of stages 2 and 3 with stride 2 and a 1×1 stride-2 conv + BN
shortcut → global average pool → dense 64 → 10).  PyTorch builds the same layers from
``nn.Conv2d``, ``nn.BatchNorm2d``, ``nn.MaxPool2d``, ``nn.Dropout``, ``nn.Linear`` (its own
initialization).  Both train with softmax cross-entropy and Adam(1e-3) on shuffled batches of
``--batch`` float32 images.

Each repetition runs two child processes, deepnet then PyTorch, each with the same thread
count (OMP/OPENBLAS/MKL/NUMBA_NUM_THREADS in its environment, ``torch.set_num_threads``).  A child
loads the images the parent wrote, builds its network, runs a warm-up epoch on the first
``--warmup-samples`` images, then times one epoch on all ``--samples``.  Reported: samples/s
per framework (median, min–max over the repetitions), the per-pair ratio deepnet / PyTorch
(pairs share the machine's state, so the ratio is steadier than either rate), memory, and
for deepnet a per-layer time split.

Memory (both children): ``rss_increase_mib`` is the process's peak resident set after the
timed epoch minus its resident set just before training starts (data loaded, network built,
libraries imported): the most memory training added.  The peak is Linux's VmHWM, reset just
before training (``/proc/self/clear_refs``; the JSON's ``peak_reset``): importing numba alone
peaks higher than a small batch's training, and a lifetime peak (``ru_maxrss``, the fallback
elsewhere) made every small batch read the same figure.  ``rss_increase_after_first_step_mib``
is the same peak minus the resident set after one training step on 2 images: without what the
first step initializes once per process whatever the batch (numba's LLVM engine, about 56 MiB,
loads with deepnet's first compiled kernel; PyTorch's kernels and thread pools).
``timed_epoch_maxrss_delta_mib`` is the peak after minus before the timed epoch alone (about 0
when the warm-up already reached the steady-state peak).  deepnet also reports
``tracemalloc_peak_mib``: the peak of the bytes NumPy arrays (and Python objects) allocate
during a few traced training steps, above what was allocated before them (tracemalloc sees
NumPy's buffers, not PyTorch's, and slows allocation: separate steps).

The per-layer split (deepnet only) comes from a separate, instrumented epoch on the first
``--profile-samples`` images, after the timed one: each layer's ``forward`` and ``backward``
are wrapped with ``time.perf_counter`` (instance attributes, removed afterwards), and so are
the backend's ``unfold`` (im2col), ``fold`` (col2im), ``linear``/``gemm`` (the products) and
the other ``ops`` methods, each charged to the layer that called it.  Inside blocks (the
ResNet's) the layers timed are the leaves, summed by kind (e.g. every "Conv2D 3x3 s1" together);
time in a block outside its leaves (the residual sum) is in "rest".  It never touches the
timed epoch.

    DEEPNET_MNIST=../shared/data/mnist python benchmarks/bench_cnn.py [--preset cnn|resnet]
        [--samples 6000] [--reps 5] [--threads 2] [--batch 128] [--json results.json]
    python benchmarks/bench_cnn.py --dry-run --json /tmp/cnn.json      # tiny: 512 images, 1 pair

Without DEEPNET_MNIST (a folder with the four IDX files) the images are random pixels (speed
does not depend on their content; the JSON says ``"data": "synthetic"``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FRAMEWORKS = ("deepnet", "pytorch")
TARGET = 1.0          # issue 27: deepnet ≥ 1.0 × PyTorch's samples/s on the CPU (issue 16 asked 0.7)
OPS_TIMED = ("unfold", "fold", "unfold_t", "fold_t", "linear", "gemm", "add_bias_", "sum_rows", "relu", "relu_backward_",
             "max_pool", "max_pool_backward", "winograd_conv", "winograd_conv_backward", "batch_norm_train",
             "batch_norm_train_backward")
PRESETS = ("cnn", "resnet")


# ---------------------------------------------------------------------------- parent: data
def load_data(n: int) -> tuple[np.ndarray, np.ndarray, str]:
    """The first ``n`` MNIST training images (rows of 784 float32 in [0, 1]) and labels, or random ones."""
    path = os.environ.get("DEEPNET_MNIST")
    if path and os.path.isdir(path):
        from deepnet.datasets import load_mnist_folder

        (X, y), _ = load_mnist_folder(path)
        if len(X) < n:
            raise SystemExit(f"--samples {n}: the MNIST training set has only {len(X)} images")
        return np.ascontiguousarray(X[:n], dtype=np.float32), y[:n].astype(np.int64), "mnist"
    rng = np.random.default_rng(0)
    return rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n).astype(np.int64), "synthetic"


# ---------------------------------------------------------------------------- child: memory
def _status_kib(field: str) -> int | None:
    """A field of /proc/self/status in KiB ("VmRSS", "VmHWM"), or None where there is no /proc."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _rss_now_kib() -> int:
    """The current resident set in KiB (Linux /proc), or ru_maxrss where there is no /proc."""
    v = _status_kib("VmRSS")
    return _maxrss_kib() if v is None else v


#: whether the peak was reset before training (else it includes what setting up peaked at)
PEAK_RESET: dict[str, bool] = {"done": False}


def _reset_peak() -> None:
    """Start the peak resident set afresh (Linux: writing 5 to /proc/self/clear_refs resets
    VmHWM): importing the libraries and building the network may peak higher than training."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        PEAK_RESET["done"] = _status_kib("VmHWM") is not None
    except OSError:
        PEAK_RESET["done"] = False


def _maxrss_kib() -> int:
    """The peak resident set in KiB since :func:`_reset_peak` (VmHWM), else the process's ru_maxrss."""
    if PEAK_RESET["done"]:
        v = _status_kib("VmHWM")
        if v is not None:
            return v
    import resource

    v = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return v // 1024 if sys.platform == "darwin" else v     # bytes on macOS, KiB on Linux


def _mib(kib: int) -> float:
    return round(kib / 1024.0, 1)


# ---------------------------------------------------------------------------- child: deepnet
def _deepnet_network(cfg: dict[str, Any]):
    import deepnet as dn
    from deepnet.presets import cnn_layers, resnet_layers

    layers = cnn_layers((28, 28), 10) if cfg["preset"] == "cnn" else resnet_layers((1, 28, 28), 10, depth=cfg["depth"])
    return dn.Network(layers, seed=cfg["seed"], backend="numpy", loss="xent", optimizer=dn.Adam(1e-3))


def _layer_label(i: int | None, layer: Any) -> str:
    """A layer's row in the split: its index at the top level, its kind inside blocks (i None)."""
    name = type(layer).__name__
    at = "" if i is None else f"{i} "
    if name == "Conv2D":
        k, st = layer.kernel_size, layer.stride
        shape = f"{layer.in_channels}->{layer.out_channels} " if i is not None else ""
        return f"{at}Conv2D {shape}{k[0]}x{k[1]}" + (f" s{st[0]}" if i is None else "")
    if name == "Dense":
        return f"{at}Dense {layer.n_in}->{layer.n_out}" if hasattr(layer, "n_in") else f"{at}Dense"
    if "Pool" in name and hasattr(layer, "pool_size"):
        return f"{at}{name} {layer.pool_size[0]}x{layer.pool_size[1]}"
    return f"{at}{name}"


def _timed_layers(net: Any) -> list[tuple[str, Any]]:
    """(label, layer) for every layer the split times: top-level leaves by index, leaves inside
    blocks by kind (several layers then share a label)."""
    out = []
    for i, layer in enumerate(net.layers):
        if not layer.sublayers():
            out.append((_layer_label(i, layer), layer))
            continue
        for _, leaf in layer.walk():
            if not leaf.sublayers():
                out.append((_layer_label(None, leaf), leaf))
    return out


def _profile_deepnet(net: Any, X: np.ndarray, y: np.ndarray, batch: int) -> dict[str, Any]:
    """One epoch on (X, y) with every layer's forward/backward and the backend's ops timed."""
    timed = _timed_layers(net)
    layers = [layer for _, layer in timed]
    labels = list(dict.fromkeys(lab for lab, _ in timed))
    times: dict[str, dict[str, float]] = {lab: {"forward": 0.0, "backward": 0.0} for lab in labels}
    ops_times: dict[str, dict[str, float]] = {lab: {} for lab in labels}
    ops_times["(outside layers)"] = {}
    current = ["(outside layers)"]
    phase = [""]
    clock = time.perf_counter

    def wrap_layer(layer: Any, lab: str, method: str) -> None:
        orig = getattr(layer, method)

        def timed(*a: Any, **k: Any) -> Any:
            prev, prev_phase = current[0], phase[0]
            current[0], phase[0] = lab, method
            t = clock()
            try:
                return orig(*a, **k)
            finally:
                times[lab][method] += clock() - t
                current[0], phase[0] = prev, prev_phase
        setattr(layer, method, timed)

    def wrap_op(ops: Any, name: str) -> None:
        orig = getattr(ops, name)

        def timed(*a: Any, **k: Any) -> Any:
            t = clock()
            try:
                return orig(*a, **k)
            finally:
                key = f"{phase[0]}.{name}" if phase[0] else name
                d = ops_times[current[0]]
                d[key] = d.get(key, 0.0) + clock() - t
        setattr(ops, name, timed)

    opt = net.optimizer
    opt_time = [0.0]
    orig_step = opt.step

    def timed_step(*a: Any, **k: Any) -> Any:
        t = clock()
        try:
            return orig_step(*a, **k)
        finally:
            opt_time[0] += clock() - t

    for lab, layer in timed:
        wrap_layer(layer, lab, "forward")
        wrap_layer(layer, lab, "backward")
    ops_objs = {id(layer.ops): layer.ops for layer in layers if getattr(layer, "ops", None) is not None}
    ops_objs.setdefault(id(net.ops), net.ops)
    for ops in ops_objs.values():
        for name in OPS_TIMED:
            if hasattr(ops, name):
                wrap_op(ops, name)
    opt.step = timed_step
    t0 = clock()
    try:
        net.fit(X, y, epochs=1, batch_size=batch, shuffle=True)
    finally:
        total = clock() - t0
        for layer in layers:
            for method in ("forward", "backward"):
                layer.__dict__.pop(method, None)
        for ops in ops_objs.values():
            for name in OPS_TIMED:
                ops.__dict__.pop(name, None)
        opt.__dict__.pop("step", None)
    steps = -(-len(X) // batch)
    ms = 1000.0 / steps
    per_layer = []
    for lab in labels:
        f, b = times[lab]["forward"], times[lab]["backward"]
        per_layer.append({"layer": lab, "forward_ms": round(f * ms, 3), "backward_ms": round(b * ms, 3),
                          "share": round((f + b) / total, 4),
                          "ops_ms": {k: round(v * ms, 3) for k, v in sorted(ops_times[lab].items())}})
    in_layers = sum(times[lab]["forward"] + times[lab]["backward"] for lab in labels)
    return {"samples": len(X), "steps": steps, "step_ms": round(total * ms, 3), "layers": per_layer,
            "optimizer_step_ms": round(opt_time[0] * ms, 3),
            "rest_ms": round((total - in_layers - opt_time[0]) * ms, 3),
            "rest_note": "loss, batch gathering, zero_grad and fit's bookkeeping"}


def _tracemalloc_deepnet(net: Any, X: np.ndarray, y: np.ndarray, batch: int) -> float:
    import tracemalloc

    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        net.fit(X, y, epochs=1, batch_size=batch, shuffle=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return round((peak - base) / 2**20, 1)


def child_deepnet(X: np.ndarray, y: np.ndarray, cfg: dict[str, Any]) -> dict[str, Any]:
    net = _deepnet_network(cfg)
    B = cfg["batch"]
    _reset_peak()
    rss0 = _rss_now_kib()
    net.fit(X[:2], y[:2], epochs=1, batch_size=2, shuffle=False)                          # one tiny step
    rss_init = _rss_now_kib()
    net.fit(X[:cfg["warmup"]], y[:cfg["warmup"]], epochs=1, batch_size=B, shuffle=True)    # warm-up
    before = _maxrss_kib()
    t = time.perf_counter()
    net.fit(X, y, epochs=1, batch_size=B, shuffle=True)                                     # timed
    dt = time.perf_counter() - t
    after = _maxrss_kib()
    out: dict[str, Any] = {"seconds": dt, "samples_per_s": len(X) / dt, "rss_before_training_mib": _mib(rss0),
                           "peak_reset": PEAK_RESET["done"],
                           "peak_rss_mib": _mib(after), "rss_increase_mib": _mib(after - rss0),
                           "rss_increase_after_first_step_mib": _mib(after - rss_init),
                           "timed_epoch_maxrss_delta_mib": _mib(after - before), "backend": net.ops.name,
                           "blas": getattr(net.ops, "blas", None)}
    if cfg["profile"] > 0:
        n = cfg["profile"]
        out["profile"] = _profile_deepnet(net, X[:n], y[:n], B)
    if cfg["trace_steps"] > 0:
        n = min(len(X), cfg["trace_steps"] * B)
        out["tracemalloc_peak_mib"] = _tracemalloc_deepnet(net, X[:n], y[:n], B)
    try:
        from threadpoolctl import threadpool_info

        out["blas_threads"] = sorted({(d.get("internal_api"), d.get("num_threads")) for d in threadpool_info()})
    except ImportError:
        pass
    return out


# ---------------------------------------------------------------------------- child: PyTorch
def _torch_cnn(nn: Any) -> Any:
    return nn.Sequential(
        nn.Unflatten(1, (1, 28, 28)),
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.5), nn.Linear(1600, 10))


def _torch_resnet(torch: Any, nn: Any, depth: int) -> Any:
    """deepnet.presets.resnet_layers in PyTorch: the same convolutions, BatchNorm, shortcuts."""

    class Basic(nn.Module):
        def __init__(self, c_in: int, c_out: int, stride: int) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out),
                                      nn.ReLU(), nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out))
            self.shortcut = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
                             if stride != 1 or c_in != c_out else nn.Identity())

        def forward(self, x: Any) -> Any:
            return torch.relu(self.body(x) + self.shortcut(x))

    n = (depth - 2) // 6
    layers: list[Any] = [nn.Unflatten(1, (1, 28, 28)), nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16),
                         nn.ReLU()]
    c = 16
    for stage, c_out in enumerate((16, 32, 64)):
        for i in range(n):
            layers.append(Basic(c, c_out, 2 if stage > 0 and i == 0 else 1))
            c = c_out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))


def child_pytorch(X: np.ndarray, y: np.ndarray, cfg: dict[str, Any]) -> dict[str, Any]:
    import torch
    from torch import nn

    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(cfg["seed"])
    model = _torch_cnn(nn) if cfg["preset"] == "cnn" else _torch_resnet(torch, nn, cfg["depth"])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    ce = nn.CrossEntropyLoss()
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    B = cfg["batch"]

    def step(xb: Any, yb: Any) -> None:
        opt.zero_grad(set_to_none=True)
        loss = ce(model(xb), yb)
        loss.backward()
        opt.step()

    def epoch(n: int) -> None:
        model.train()
        order = torch.randperm(n)
        for s in range(0, n, B):
            idx = order[s:s + B]
            step(Xt[idx], yt[idx])

    _reset_peak()
    rss0 = _rss_now_kib()
    step(Xt[:2], yt[:2])                                                                     # one tiny step
    rss_init = _rss_now_kib()
    epoch(cfg["warmup"])                                                                     # warm-up
    before = _maxrss_kib()
    t = time.perf_counter()
    epoch(len(X))                                                                            # timed
    dt = time.perf_counter() - t
    after = _maxrss_kib()
    return {"seconds": dt, "samples_per_s": len(X) / dt, "rss_before_training_mib": _mib(rss0),
            "peak_reset": PEAK_RESET["done"],
            "peak_rss_mib": _mib(after), "rss_increase_mib": _mib(after - rss0),
            "rss_increase_after_first_step_mib": _mib(after - rss_init),
            "timed_epoch_maxrss_delta_mib": _mib(after - before), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "mkldnn": bool(torch.backends.mkldnn.is_available())}


def child_main(framework: str, data: str, cfg_json: str) -> None:
    cfg = json.loads(cfg_json)
    with np.load(data) as d:
        X, y = np.ascontiguousarray(d["X"]), np.ascontiguousarray(d["y"])
    result = (child_deepnet if framework == "deepnet" else child_pytorch)(X, y, cfg)
    print("RESULT " + json.dumps(result))


# ---------------------------------------------------------------------------- parent: runs
def run_child(framework: str, data: Path, cfg: dict[str, Any], timeout: float) -> dict[str, Any]:
    t = str(cfg["threads"])
    env = {**os.environ, "OMP_NUM_THREADS": t, "OPENBLAS_NUM_THREADS": t, "MKL_NUM_THREADS": t, "NUMBA_NUM_THREADS": t,
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    env.pop("DEEPNET_BACKEND", None)
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", framework, "--child-data",
                           str(data), "--child-config", json.dumps(cfg)], env=env, cwd=str(ROOT),
                          capture_output=True, text=True, timeout=timeout, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{framework} child failed (exit {proc.returncode}):\n"
                         f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def summary(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


def merge_profiles(profiles: list[dict[str, Any]]) -> dict[str, Any]:
    """The median over the deepnet children of every number in the per-layer split."""
    first = profiles[0]
    med = lambda vals: round(statistics.median(vals), 3)   # noqa: E731
    layers = []
    for j, lay in enumerate(first["layers"]):
        keys = sorted({k for p in profiles for k in p["layers"][j]["ops_ms"]})
        layers.append({"layer": lay["layer"],
                       "forward_ms": med([p["layers"][j]["forward_ms"] for p in profiles]),
                       "backward_ms": med([p["layers"][j]["backward_ms"] for p in profiles]),
                       "share": round(statistics.median([p["layers"][j]["share"] for p in profiles]), 4),
                       "ops_ms": {k: med([p["layers"][j]["ops_ms"].get(k, 0.0) for p in profiles]) for k in keys}})
    return {"samples": first["samples"], "steps": first["steps"], "children": len(profiles),
            "step_ms": med([p["step_ms"] for p in profiles]),
            "step_ms_range": [min(p["step_ms"] for p in profiles), max(p["step_ms"] for p in profiles)],
            "layers": layers, "optimizer_step_ms": med([p["optimizer_step_ms"] for p in profiles]),
            "rest_ms": med([p["rest_ms"] for p in profiles]), "rest_note": first["rest_note"],
            "note": "ms per training step (batch of the run), medians over the deepnet children; ops_ms are the "
                    "backend calls inside that layer's forward/backward; the layer time minus its ops is NumPy "
                    "work written in the layer (e.g. the NCHW transposes, max/argmax)"}


def print_report(res: dict[str, Any]) -> None:
    c = res["config"]
    net = "CNN" if c["preset"] == "cnn" else f"ResNet-{c['depth']}"
    print(f"\npreset {net}, {c['samples']} {res['data']} images, batch {c['batch']}, {c['threads']} threads, "
          f"{c['reps']} alternating pairs (warm-up {c['warmup_samples']} images per child)")
    print(f"{'framework':<10} {'samples/s median':>17} {'min-max':>17} {'RSS increase MiB':>17} "
          f"{'after 1st step':>15} {'peak RSS MiB':>13}")
    for fw in FRAMEWORKS:
        r = res["frameworks"][fw]
        s, m = r["samples_per_s"], r["rss_increase_mib"]
        print(f"{fw:<10} {s['median']:>17.1f} {s['min']:>8.1f}-{s['max']:<8.1f} {m['median']:>17.1f} "
              f"{r['rss_increase_after_first_step_mib']['median']:>15.1f} {r['peak_rss_mib']['median']:>13.1f}")
    q = res["ratio_deepnet_over_pytorch"]
    print(f"deepnet / PyTorch per pair: median {q['median']:.3f} ({q['min']:.3f}-{q['max']:.3f}); "
          f"target >= {TARGET}: {'met' if res['meets_target'] else 'NOT met'}")
    tm = res["frameworks"]["deepnet"].get("tracemalloc_peak_mib")
    if tm:
        print(f"deepnet tracemalloc peak over {c['trace_steps']} steps (NumPy arrays): median {tm['median']:.1f} MiB")
    prof = res.get("deepnet_layer_split")
    if prof:
        print(f"\ndeepnet per-layer split (instrumented epoch, {prof['samples']} images, {prof['steps']} steps, "
              f"median of {prof['children']}): {prof['step_ms']:.1f} ms/step")
        print(f"{'layer':<28} {'fwd ms':>8} {'bwd ms':>8} {'share':>6}  backend ops (ms/step)")
        for lay in prof["layers"]:
            ops = ", ".join(f"{k} {v:.1f}" for k, v in lay["ops_ms"].items() if v >= 0.05)
            print(f"{lay['layer']:<28} {lay['forward_ms']:>8.2f} {lay['backward_ms']:>8.2f} "
                  f"{100 * lay['share']:>5.1f}%  {ops}")
        print(f"{'optimizer step':<28} {prof['optimizer_step_ms']:>8.2f}")
        print(f"{'rest (' + prof['rest_note'].split(',')[0] + ', ...)':<28} {prof['rest_ms']:>8.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=PRESETS, default="cnn", help="the network: the simple CNN or the ResNet")
    ap.add_argument("--depth", type=int, default=20, help="the ResNet's depth, 6n+2 (--preset resnet)")
    ap.add_argument("--samples", type=int, default=6000, help="images in the timed epoch (the first N of MNIST)")
    ap.add_argument("--reps", type=int, default=5, help="alternating deepnet/PyTorch pairs")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--warmup-samples", type=int, default=1280, help="images in each child's warm-up epoch")
    ap.add_argument("--profile-samples", type=int, default=1280,
                    help="images in deepnet's instrumented epoch (0: no per-layer split)")
    ap.add_argument("--trace-steps", type=int, default=3, help="deepnet steps traced by tracemalloc (0: none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per child")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--dry-run", action="store_true", help="tiny: 512 images, 1 pair (for a test)")
    ap.add_argument("--child", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    ap.add_argument("--child-data", help=argparse.SUPPRESS)
    ap.add_argument("--child-config", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_main(args.child, args.child_data, args.child_config)
        return
    if args.dry_run:
        args.samples, args.reps = 512, 1
        args.warmup_samples, args.profile_samples, args.trace_steps = 128, 128, 1
    for name in ("samples", "reps", "threads", "batch", "warmup_samples"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    if importlib.util.find_spec("torch") is None:
        raise SystemExit("bench_cnn: PyTorch is not importable (pip install torch): nothing to compare with")

    X, y, kind = load_data(args.samples)
    if kind == "synthetic":
        print("note: DEEPNET_MNIST is not set to a folder: training on random pixels (same speed, no accuracy)")
    if args.preset == "resnet" and (args.depth < 8 or (args.depth - 2) % 6):
        ap.error(f"--depth must be 6n+2 with n >= 1 (8, 14, 20, ...), got {args.depth}")
    cfg = {"preset": args.preset, "depth": args.depth, "batch": args.batch, "threads": args.threads, "seed": args.seed,
           "warmup": min(args.warmup_samples, args.samples), "profile": min(args.profile_samples, args.samples),
           "trace_steps": args.trace_steps}
    runs: dict[str, list[dict[str, Any]]] = {fw: [] for fw in FRAMEWORKS}
    with tempfile.TemporaryDirectory(prefix="bench_cnn_") as tmp:
        data = Path(tmp) / "data.npz"
        np.savez(data, X=X, y=y)
        for rep in range(args.reps):
            for fw in FRAMEWORKS:
                r = run_child(fw, data, cfg, args.timeout)
                runs[fw].append(r)
                print(f"pair {rep + 1}/{args.reps} {fw:<8} {r['samples_per_s']:8.1f} samples/s "
                      f"({r['seconds']:.2f} s), RSS +{r['rss_increase_mib']:.0f} MiB", flush=True)

    frameworks: dict[str, Any] = {}
    for fw in FRAMEWORKS:
        rs = runs[fw]
        entry = {"samples_per_s": summary([r["samples_per_s"] for r in rs]),
                 "seconds": summary([r["seconds"] for r in rs]),
                 "rss_increase_mib": summary([r["rss_increase_mib"] for r in rs]),
                 "rss_increase_after_first_step_mib": summary([r["rss_increase_after_first_step_mib"] for r in rs]),
                 "peak_rss_mib": summary([r["peak_rss_mib"] for r in rs]),
                 "timed_epoch_maxrss_delta_mib": summary([r["timed_epoch_maxrss_delta_mib"] for r in rs]),
                 "peak_reset": all(r.get("peak_reset") for r in rs),
                 "rss_before_training_mib": summary([r["rss_before_training_mib"] for r in rs])}
        if fw == "deepnet":
            entry["backend"], entry["blas"] = rs[0]["backend"], rs[0]["blas"]
            if "blas_threads" in rs[0]:
                entry["blas_threads"] = rs[0]["blas_threads"]
            if all("tracemalloc_peak_mib" in r for r in rs):
                entry["tracemalloc_peak_mib"] = summary([r["tracemalloc_peak_mib"] for r in rs])
        else:
            entry.update({k: rs[0][k] for k in ("torch", "torch_threads", "mkldnn")})
        frameworks[fw] = entry
    ratios = [d["samples_per_s"] / p["samples_per_s"] for d, p in zip(runs["deepnet"], runs["pytorch"], strict=True)]
    result: dict[str, Any] = {
        "benchmark": "bench_cnn", "data": kind,
        "config": {"preset": args.preset, "depth": args.depth if args.preset == "resnet" else None,
                   "samples": args.samples, "reps": args.reps, "threads": args.threads, "batch": args.batch,
                   "warmup_samples": cfg["warmup"], "profile_samples": cfg["profile"],
                   "trace_steps": args.trace_steps, "optimizer": "Adam(1e-3)", "loss": "softmax cross-entropy",
                   "dtype": "float32", "dry_run": args.dry_run},
        "machine": {"python": platform.python_version(), "numpy": np.__version__, "platform": platform.platform(),
                    "cpus": os.cpu_count()},
        "frameworks": frameworks,
        "ratio_deepnet_over_pytorch": summary(ratios),
        "target_ratio": TARGET, "meets_target": statistics.median(ratios) >= TARGET,
        "memory_note": "rss_increase_mib: the peak RSS (VmHWM, reset before training where peak_reset) after "
                       "the timed epoch minus VmRSS just before training "
                       "(warm-up + timed epoch); rss_increase_after_first_step_mib: the same minus VmRSS after "
                       "one step on 2 images (once-per-process initialization left out); tracemalloc_peak_mib: "
                       "NumPy arrays only, deepnet only",
    }
    profiles = [r["profile"] for r in runs["deepnet"] if "profile" in r]
    if profiles:
        result["deepnet_layer_split"] = merge_profiles(profiles)
    print_report(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
