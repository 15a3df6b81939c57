"""Peak NumPy memory (tracemalloc) of one training step of the preset CNN at batch 1024, with the
default patch budget (Conv2D.max_patch_bytes, 256 MiB: no chunks here) and with a 16 MiB one
(convolutions in chunks of samples, backward unfolding each chunk again).

    OPENBLAS_NUM_THREADS=2 PYTHONPATH=. python benchmarks/cnn_patch_memory.py
"""
import tracemalloc, time
import numpy as np
import deepnet as dn
from deepnet.presets import cnn_layers
from deepnet.backend.numpy_ops import NumpyOps
rng = np.random.default_rng(0)
X, y = rng.random((1024, 784), dtype=np.float32), rng.integers(0, 10, 1024)
for budget in (None, 16 << 20):
    net = dn.Network(cnn_layers((28, 28), 10), seed=0, backend=NumpyOps(), loss="xent", optimizer="adam")
    if budget:
        for layer in net.layers:
            if isinstance(layer, dn.Conv2D):
                layer.max_patch_bytes = budget
    net.fit(X, y, epochs=1, batch_size=1024)          # warm-up (slots, caches)
    tracemalloc.start()
    t0 = time.perf_counter()
    net.fit(X, y, epochs=1, batch_size=1024)
    dt = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f"max_patch_bytes={'default (256 MiB)' if budget is None else '16 MiB'}: peak {peak / 2**20:.1f} MiB, step {dt:.2f} s")
