#!/usr/bin/env python
"""Plant known bugs in the maths, one at a time, and check that the test suite catches each.

Each mutation is (id, file, exact original snippet, mutated snippet, pytest selection,
description).  The working tree (tracked files plus untracked files git does not ignore:
uncommitted work included, not HEAD) is copied once into a temporary folder; for each
mutation the file is edited there, the selection runs with ``-x -q`` (``PYTHONPATH`` and
the working directory point at the copy), and the file is restored byte for byte (and
with its timestamp, so numba's on-disk cache of unmutated kernels stays valid).  The
repository itself is never modified.

A mutation is *caught* when its selection fails, *survived* when it passes.  The script
exits non-zero when any mutation survives, when a snippet is not found exactly once in
its file (so the list cannot silently rot as the code changes), or when a selection
fails or collects nothing on the unmutated copy (then "caught" would mean nothing).

    python scripts/mutation_check.py                 # all mutations (about 10-15 minutes on 2 cores)
    python scripts/mutation_check.py --list          # the list, nothing run
    python scripts/mutation_check.py --only M04,M05  # some of them
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

OPT_EQ = ["tests/test_optimizers.py", "-k", "match_equations or multi_tensor or follow_the_update or fused_optimizer"]
OPT_GPU = ["tests/test_optimizers.py", "tests/test_gpu.py", "tests/test_cupy_shaped.py",
           "-k", "match_equations or multi_tensor or follow_the_update or fused_optimizer"]


@dataclass(frozen=True)
class Mutation:
    id: str
    file: str
    original: str
    mutated: str
    tests: list[str]
    description: str


M = Mutation
MUTATIONS: list[Mutation] = [
    # ---- backward passes of activations
    M("M01", "deepnet/backend/ops.py",
      "        dy -= s\n        dy *= y\n", "        dy += s\n        dy *= y\n",
      ["tests/test_layers.py", "-k", "Softmax"],
      "softmax backward: sign of the Σ dy·y term flipped"),
    M("M02", "deepnet/backend/ops.py",
      "        dy *= 1.0 - y * y\n", "        dy *= 1.0 - y\n",
      ["tests/test_layers.py", "-k", "Tanh"],
      "tanh derivative 1 − y instead of 1 − y²"),
    M("M03", "deepnet/backend/numba_kernels.py",
      "        dy[i] *= y[i] * (one - y[i])\n", "        dy[i] *= (one - y[i])\n",
      ["tests/test_layers.py", "-k", "Sigmoid"],
      "sigmoid derivative without the y factor (numba small-array kernel)"),
    M("M04", "deepnet/backend/ops.py",
      "        dy *= y * (1.0 - y)\n        return dy\n", "        dy *= 1.0 - y\n        return dy\n",
      ["tests/test_activation_accuracy.py", "-k", "Sigmoid"],
      "sigmoid derivative without the y factor (generic code: NumPy's path for arrays over 4,096 elements)"),
    M("M05", "deepnet/backend/numpy_ops.py",
      "        e = np.abs(x)\n        np.negative(e, out=e)\n        np.exp(e, out=e)\n"
      "        y = np.maximum(e, x >= 0, dtype=x.dtype)\n        e += 1.0\n        y /= e\n        return y\n",
      "        y = np.multiply(x, 0.5)\n        np.tanh(y, out=y)\n"
      "        y *= 0.5\n        y += 0.5\n        return y\n",
      ["tests/test_activation_accuracy.py", "-k", "Sigmoid or sigmoid"],
      "sigmoid back to ½·tanh(x/2)+½ on large arrays (issue 13: 0 at x = −20)"),
    M("M06", "deepnet/backend/ops.py",
      "        return xp.where(x >= 0, 1.0 / d, e / d)\n", "        return xp.where(x >= 0, 1.0 / d, 1.0 - 1.0 / d)\n",
      ["tests/test_activation_accuracy.py", "-k", "Sigmoid or sigmoid"],
      "generic sigmoid's negative branch as 1 − 1/(1+e) (cancels: the old tail error)"),
    M("M07", "deepnet/backend/ops.py",
      "        dy *= self.xp.astype(y > 0, dy.dtype)\n", "        dy *= self.xp.astype(y >= 0, dy.dtype)\n",
      ["tests/test_layers.py", "-k", "ReLU and not Leaky"],
      "ReLU backward boundary y ≥ 0 instead of y > 0 (generic ops: strict, torch, cupy)"),
    M("M08", "deepnet/backend/numba_kernels.py",
      "        dy[i] = dy[i] if y[i] > zero else zero\n", "        dy[i] = dy[i] if y[i] >= zero else zero\n",
      ["tests/test_layers.py", "-k", "ReLU and not Leaky"],
      "ReLU backward boundary y ≥ 0 instead of y > 0 (numba kernel, NumPy's default)"),
    M("M09", "deepnet/layers/dropout.py",
      "        grad_output *= mask\n", "        grad_output *= mask * (1.0 - self.p)\n",
      ["tests/test_layers.py", "-k", "Dropout"],
      "dropout backward: mask not scaled by 1/(1 − p)"),
    # ---- losses
    M("M10", "deepnet/backend/ops.py",
      "        e *= 2.0 * scale\n", "        e *= scale\n",
      ["tests/test_losses.py"],
      "sum-of-squares gradient missing its factor 2 (generic ops)"),
    M("M11", "deepnet/backend/numpy_ops.py",
      "            e *= 2.0 * scale\n", "            e *= scale\n",
      ["tests/test_losses.py"],
      "sum-of-squares gradient missing its factor 2 (NumPy, batches over 1)"),
    M("M12", "deepnet/backend/ops.py",
      "        grad *= scale\n        return loss, grad\n", "        return loss, grad\n",
      ["tests/test_losses.py"],
      "softmax cross-entropy gradient: batch scale dropped (generic ops)"),
    M("M13", "deepnet/backend/numba_kernels.py",
      "        inv = scale / s\n", "        inv = (scale / scale) / s\n",
      ["tests/test_losses.py"],
      "softmax cross-entropy gradient: batch scale dropped (numba kernel)"),
    M("M14", "deepnet/backend/numba_kernels.py",
      "        total += np.log(s) - (z[r, label] - m)\n", "        total += np.log(s) - (z[r, label - 1] - m)\n",
      ["tests/test_losses.py"],
      "cross-entropy picks the logit of label − 1 (numba kernel)"),
    M("M15", "deepnet/backend/numpy_ops.py",
      "        picked = p[rows, target]", "        picked = p[rows, target - 1]",
      ["tests/test_losses.py"],
      "cross-entropy picks the logit of label − 1 (pure-NumPy path)"),
    M("M16", "deepnet/backend/ops.py",
      "            out *= on - off\n            out += off\n", "            out *= off - on\n            out += on\n",
      ["tests/test_losses.py"],
      "one_hot: on and off values swapped"),
    # ---- optimizers
    # Adam's bias correction is computed once per step, in the optimizer (Adam.step_scalars);
    # each backend path must apply the step size η_t it is given (M18-M20).
    M("M17", "deepnet/optimizers.py",
      "        lr_t = self.lr * c2 / (1.0 - self.beta1 ** t)\n",
      "        lr_t = self.lr * c2 / (1.0 - self.beta1 ** (t + 1))\n",
      OPT_EQ, "Adam bias correction off by one step (η_t, computed once in the optimizer)"),
    M("M18", "deepnet/backend/numpy_ops.py",
      "        g *= lr_t\n        w -= g\n", "        g *= lr_t * beta1\n        w -= g\n",
      OPT_EQ, "Adam step size η_t applied wrongly (×β₁) in the pure-NumPy path"),
    M("M18b", "deepnet/backend/numba_ops.py",
      'self._k.kernel("adam", w.size)(*flat, t(lr_t),', 'self._k.kernel("adam", w.size)(*flat, t(lr_t * beta1),',
      OPT_EQ, "Adam step size η_t applied wrongly (×β₁) in the numba one-parameter kernel's arguments"),
    M("M19", "deepnet/backend/numba_ops.py",
      'self._k.many["adam"](*lists, t(lr_t),', 'self._k.many["adam"](*lists, t(lr_t * beta1),',
      OPT_EQ, "Adam step size η_t applied wrongly (×β₁) in the numba multi-tensor path"),
    M("M20", "deepnet/backend/cupy_ops.py",
      "self._k.adam(g, self._arg(t, lr_t),", "self._k.adam(g, self._arg(t, lr_t * beta1),",
      OPT_GPU, "Adam step size η_t applied wrongly (×β₁) in the fused CuPy kernel's arguments"),
    M("M21", "deepnet/optimizers.py",
      "        eps_hat = c2 * self.eps\n", "        eps_hat = self.eps\n",
      OPT_GPU, "Adam: ε not bias-corrected (ε instead of ε·√(1−β₂ᵗ), computed once in the optimizer)"),
    M("M22", "deepnet/backend/cupy_kernels.py",
      '"v = b2 * v + c2 * g * g;"', '"v = b2 * v + c2 * g;"',
      OPT_GPU, "fused CuPy Adam kernel: second moment of g instead of g²"),
    M("M23", "deepnet/backend/numba_kernels.py",
      "            w[i] -= lr * (g[i] + mu * vi)\n", "            w[i] -= lr * (g[i] - mu * vi)\n",
      OPT_EQ, "Nesterov momentum: sign of the look-ahead term (numba kernel)"),
    M("M22b", "deepnet/backend/cupy_ops.py",
      "t(1.0 - beta1), t(1.0 - beta2),", "t(1.0 - beta1), t(1.0) - t(beta2),",
      ["tests/test_parity.py", "-k", "cupy-shaped-fused-adam"],
      "fused CuPy Adam: 1 − β₂ rounded in float32 (the bug parity criterion (b) found)"),
    M("M24", "deepnet/backend/cupy_kernels.py",
      "nesterov ? g + mu * v : v", "nesterov ? g - mu * v : v",
      OPT_GPU, "Nesterov momentum: sign of the look-ahead term (fused CuPy kernel)"),
    M("M25", "deepnet/backend/numba_kernels.py",
      "            vi = mu * v[i] + g[i]\n            vi = vi if abs(vi) >= tiny else zero\n            v[i] = vi\n"
      "            w[i] -= lr * vi\n",
      "            vi = v[i] + g[i]\n            vi = vi if abs(vi) >= tiny else zero\n            v[i] = vi\n"
      "            w[i] -= lr * vi\n",
      OPT_EQ, "momentum: velocity not decayed by μ (numba kernel)"),
    M("M26", "deepnet/backend/numpy_ops.py",
      "        s *= rho\n        t = np.multiply(g, g, out=np.empty_like(g))    # an array even for a 0-d g (NumPy gives a scalar)\n        t *= 1.0 - rho\n",
      "        s *= 1.0 - rho\n        t = np.multiply(g, g, out=np.empty_like(g))    # an array even for a 0-d g (NumPy gives a scalar)\n        t *= rho\n",
      ["tests/test_optimizers.py", "-k", "rmsprop"],
      "RMSProp: ρ and 1 − ρ swapped (NumPy)"),
    M("M27", "deepnet/backend/numba_kernels.py",
      "        w[i] -= lr * g[i]\n", "        w[i] -= g[i]\n",
      OPT_EQ, "SGD: learning rate not applied (numba kernel, parameters of 1,024+ elements)"),
    M("M28", "deepnet/backend/numpy_ops.py",
      "    def sgd_update_(self, w: Array, g: Array, lr: float) -> Array:\n        g *= lr\n        w -= g\n",
      "    def sgd_update_(self, w: Array, g: Array, lr: float) -> Array:\n        w -= g\n",
      OPT_EQ, "SGD: learning rate not applied (pure-NumPy path)"),
    M("M29", "deepnet/optimizers.py",
      "            g += p.data * wd\n", "            g -= p.data * wd\n",
      ["tests/test_optimizers.py", "-k", "l2"],
      "L2 weight decay with the wrong sign"),
    M("M30", "deepnet/optimizers.py",
      "    return ops.xp.sqrt(total)\n", "    return total\n",
      ["tests/test_optimizers.py", "-k", "clip"],
      "gradient clipping by the squared norm instead of the norm"),
    M("M31", "deepnet/optimizers.py",
      "        norms = xp.sqrt(xp.sum(w * w, axis=1, keepdims=True))\n",
      "        norms = xp.sqrt(xp.sum(w * w, axis=0, keepdims=True))\n",
      ["tests/test_optimizers.py", "-k", "max_norm"],
      "max-norm over columns (outgoing weights) instead of rows (incoming)"),
    # ---- layers
    M("M32", "deepnet/layers/dense.py",
      "            ops.sum_rows(grad_output, out=gb, accumulate=acc)",
      "            ops.sum_rows(grad_output, out=gb, accumulate=False)",
      ["tests/test_layer_harness.py", "tests/test_layers.py", "-k", "builtin or accumulate"],
      "Dense bias gradient written with accumulate=False (overwrites instead of adding)"),
    M("M33", "deepnet/layers/normalization.py",
      "    dxhat -= xhat * m2\n", "",
      ["tests/test_layers.py", "-k", "BatchNorm"],
      "BatchNorm backward missing the x̂·mean(dx̂∘x̂) term"),
    M("M34", "deepnet/layers/normalization.py",
      "        inv_std = 1.0 / xp.sqrt(xp.var(x, axis=1, keepdims=True) + self.eps)\n",
      "        inv_std = 1.0 / (xp.sqrt(xp.var(x, axis=1, keepdims=True)) + self.eps)\n",
      ["tests/test_layers.py", "tests/test_layer_harness.py", "-k", "LayerNorm"],
      "LayerNorm ε outside the square root: 1/(σ + ε) instead of 1/√(σ² + ε)"),
    # ---- interop
    M("M35", "deepnet/interop.py",
      "    m = float(torch_momentum)\n", "    m = float(torch_momentum or 0.1)\n",
      ["tests/test_checkpoint.py", "-k", "batchnorm"],
      "from_torch: BatchNorm momentum 0.0 (frozen) read as 0.1 (issue 13)"),
    # ---- the training loop (deepnet/training, issue 14)
    M("M36", "deepnet/training/step.py",
      "    model.zero_grad()\n", "",
      ["tests/test_training.py", "-k", "train_step"],
      "train_step leaves the gradients to accumulate into the next step"),
    M("M37", "deepnet/training/batches.py",
      "take(T, perm[s:e], out=tb)", "T[s:e, ...]",
      ["tests/test_training.py", "-k", "shuffled_epoch or same_rows"],
      "shuffled batches gather the inputs but take the targets in the old order"),
    M("M38", "deepnet/training/metrics.py",
      "                weights[-1] = float(e - s - (done - first - 1) * self.batch_size)",
      "                pass",
      ["tests/test_network.py", "-k", "partial_last_batch"],
      "the epoch loss weights a short last batch as a full one"),
    M("M39", "deepnet/training/trainer.py",
      "run.first_batch if epoch == run.first_epoch else 0, run)",
      "0, run)",
      ["tests/test_checkpoint.py", "-k", "resume or mid_epoch"],
      "a resumed run restarts its epoch from the first batch (batches trained twice)"),
    M("M40", "deepnet/training/guard.py",
      "        if math.isfinite(loss):\n            return True\n",
      "        return True\n",
      ["tests/test_checkpoint.py", "tests/test_training.py", "-k", "finite or nan or skip"],
      "the NaN guard accepts every step (a NaN loss updates the weights)"),
    M("M41", "deepnet/training/trainer.py",
      "        net.optimizer.match_parameters(net.parameters(), ops)\n", "",
      ["tests/test_network.py", "-k", "column_major"],
      "optimizer slots keep an old memory layout after the backend re-laid out a weight"),
    M("M42", "deepnet/training/trainer.py",
      "                                 + ([] if ckpt is None else [SaveCheckpoints(ckpt, where)]))\n",
      "                                 )\n        callbacks.batch_callbacks.insert(0, SaveCheckpoints(ckpt, where)) if ckpt else None\n",
      ["tests/test_training.py", "-k", "after_the_users_batch_hooks"],
      "a step's checkpoint is written before the user's on_batch_end ran (resume no longer exact)"),
    M("M43", "deepnet/training/trainer.py",
      "        run.callbacks.epoch_totals(net, epoch, totals)      # stop-point save, then the NaN guard\n", "",
      ["tests/test_training.py", "tests/test_checkpoint.py", "-k", "non_finite or nan"],
      "the end-of-epoch NaN check (and the stop-point save) never run"),
    M("M44", "deepnet/training/batches.py",
      "x_order = perm if rows is None else rows if perm is None else take(rows, perm)",
      "x_order = perm if rows is None else rows if perm is None else perm",
      ["tests/test_training.py", "-k", "rows_by_index"],
      "a split by indices gathers the wrong rows of X (positions instead of the split's rows)"),
    M("M45", "deepnet/backend/ops.py",
      "        eps_hat[...] = xp.astype(c2 * eps, eps_hat.dtype)\n",
      "        eps_hat[...] = xp.astype(c2 * 0.0 + eps, eps_hat.dtype)\n",
      ["tests/test_graphs.py", "-k", "adam and not shaped"],
      "captured step: Adam's ε not bias-corrected in the device scalars"),
    M("M46", "deepnet/training/captured.py",
      "        self.index += 1\n", "        self.index += 0\n",
      ["tests/test_graphs.py", "-k", "exactly_as and numpy"],
      "captured step: the device batch index never advances (every step trains batch 0)"),
    M("M47", "deepnet/optimizers.py",
      "                self._ops.fill_(cell, value)\n", "                pass\n",
      ["tests/test_graphs.py", "-k", "batch_callbacks"],
      "captured step: a new learning rate never reaches the device (a schedule is ignored)"),
    M("M48", "deepnet/training/captured.py",
      "        self._check_state(before, _state_of(self.net, self.ops), new_too=True)\n", "",
      ["tests/test_graphs.py", "-k", "rebinds_state"],
      "captured step: a layer that rebinds its state while captured is not found"),
    M("M49", "deepnet/backend/precision.py",
      "    out = u + (half + ((u >> np.uint32(drop)) & np.uint32(1)))\n",
      "    out = u + half\n",
      ["tests/test_precision.py"],
      "bf16/TF32 rounding: ties not to even"),
    M("M50", "deepnet/training/captured.py",
      "            self.net.zero_grad()\n            self.net.clear_cache()\n", "",
      ["tests/test_graphs.py", "-k", "retries_the_step"],
      "a refused capture's retry adds to the gradients the captured backward marked written"),
    M("M51", "deepnet/training/captured.py",
      "        if now != self._settings:\n", "        if False:\n",
      ["tests/test_graphs.py", "-k", "captured_again"],
      "a setting a graph froze (momentum, dropout p) changes and the old graph keeps replaying"),
    M("M52", "deepnet/training/step.py",
      "    if share != 1.0:\n        dz *= share\n", "",
      ["tests/test_distributed.py", "-k", "batch_2b"],
      "each rank's error is not scaled by its share of the global batch: the summed gradient is R times too large"),
    M("M53", "deepnet/layers/normalization.py",
      "        means = self._global_means(n, axes, bshape) if training and self.sync is not None else None\n",
      "        means = None\n",
      ["tests/test_distributed.py", "-k", "batch_2b and bn"],
      "synchronized BatchNorm's backward takes the means of its own rows instead of the global batch's"),
    M("M54", "deepnet/distributed/shards.py",
      "    tail = last[rank * m // size:(rank + 1) * m // size]\n", "    tail = last[:m // size]\n",
      ["tests/test_distributed.py", "-k", "shards_split or batch_2b"],
      "every rank trains the same rows of the short last global batch"),
    M("M55", "deepnet/training/data_parallel.py",
      "        stopped = [reason for stop, reason, _, _ in flags if stop]\n",
      "        stopped = []\n",
      ["tests/test_distributed.py", "-k", "stops_one_rank"],
      "a callback stops one rank only: it leaves the others waiting in their next reduction"),
    M("M56", "deepnet/network.py",
      "            self._device_rng = self.ops.device_rng((self._device_seed + _REPLICA_STRIDE * self._replica) % 2**63)\n",
      "            self._device_rng = self.ops.device_rng(self._device_seed)\n",
      ["tests/test_distributed.py", "-k", "dropout_masks"],
      "every rank draws the same dropout masks"),
    M("M57", "deepnet/checkpoint.py",
      "            device_rng = per_rank[comm.rank]          # each rank's own dropout stream\n", "",
      ["tests/test_distributed.py", "-k", "resumed_mid_epoch"],
      "on resume every rank takes rank 0's dropout generator state"),
    # ---- augmentation layers
    M("AUG1", "deepnet/layers/augment.py",
      "        return self.ops.crop_at(grad_output, -top, -left, hw)\n",
      "        return self.ops.crop_at(grad_output, top, left, hw)\n",
      ["tests/test_layer_harness.py", "-k", "RandomShift or RandomCrop"],
      "shift/crop backward: the error shifted by the same offsets, not the opposite ones"),
    M("AUG2", "deepnet/layers/augment.py",
      "        return self._apply(grad_output, flips)\n", "        return grad_output\n",
      ["tests/test_layer_harness.py", "-k", "RandomFlip"],
      "flip backward: the error not flipped back"),
    M("AUG3", "deepnet/backend/ops.py",
      "        return xp.where(inside, vals, xp.zeros_like(vals))\n", "        return vals\n",
      ["tests/test_augment.py", "-k", "padded_crop"],
      "crop_at: the padding repeats the edge pixels instead of zeros"),
    M("AUG4", "deepnet/layers/draws.py",
      "        self.rng = rng\n", "        pass\n",
      ["tests/test_augment.py", "-k", "resume"],
      "augmentation draws from a stream of its own, which a checkpoint does not restore"),
    # ---- blocks (deepnet/layers/combinators.py)
    M("MB1", "deepnet/layers/combinators.py",
      "        return e_block + e_short                    # ẽ_in = block.backward(ẽ) + shortcut.backward(ẽ)\n",
      "        return e_block\n",
      ["tests/test_layer_harness.py", "-k", "Residual and numpy"],
      "Residual backward: the shortcut's gradient is missing from ẽ_in"),
    M("MB2", "deepnet/layers/combinators.py",
      "                total = e if total is None else total + e\n", "                total = e\n",
      ["tests/test_layer_harness.py", "-k", "(Concatenate or Add) and numpy"],
      "Concatenate/Add backward: the branches' input errors are not summed (only the last one kept)"),
    M("MB3", "deepnet/layers/combinators.py",
      "        child.cached = kept\n", "",
      ["tests/test_blocks.py", "-k", "used_twice and numpy"],
      "a layer used twice in a block: backward of both calls reads the second call's cache"),
    M("MB4", "deepnet/layers/combinators.py",
      "        e_block = self._back(\"block\", kb, ops.copy(grad_output), need_input_grad)\n",
      "        e_block = self._back(\"block\", kb, grad_output, need_input_grad)\n",
      ["tests/test_layer_harness.py", "-k", "Residual and numpy"],
      "Residual backward: the block overwrites the error the identity shortcut still needs"),
]


def working_tree_files(root: Path) -> list[str]:
    """Tracked files and untracked files git does not ignore, as they are now on disk."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                         capture_output=True, check=True).stdout.decode()
    return sorted({f for f in out.split("\0") if f and (root / f).is_file()})


def copy_tree(root: Path, dest: Path) -> None:
    for rel in working_tree_files(root):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, target)


def run_pytest(copy: Path, args: list[str], timeout: float) -> tuple[int | None, str, float]:
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *args]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        out = (err.stdout or b"").decode(errors="replace") if isinstance(err.stdout, bytes) else (err.stdout or "")
        return None, out, time.perf_counter() - t0
    return proc.returncode, proc.stdout + proc.stderr, time.perf_counter() - t0


def first_failure(output: str) -> str:
    m = re.search(r"^(?:FAILED|ERROR) (.+?)(?: - .*)?$", output, re.M)
    return m.group(1) if m else "?"


def check_snippets(copy: Path, mutations: list[Mutation]) -> list[str]:
    problems = []
    for mu in mutations:
        path = copy / mu.file
        if not path.is_file():
            problems.append(f"{mu.id}: {mu.file} does not exist")
            continue
        n = path.read_text(encoding="utf-8").count(mu.original)
        if n != 1:
            problems.append(f"{mu.id}: snippet found {n} times in {mu.file} (expected exactly once): {mu.original!r}")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", help="comma-separated mutation ids")
    ap.add_argument("--list", action="store_true", help="print the mutations and exit")
    ap.add_argument("--no-baseline", action="store_true", help="skip running each selection on the unmutated copy")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per pytest run (a timeout counts as caught)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary copy")
    args = ap.parse_args()

    chosen = MUTATIONS
    if args.only:
        want = {s.strip() for s in args.only.split(",") if s.strip()}
        unknown = want - {m.id for m in MUTATIONS}
        if unknown:
            print(f"unknown mutation ids: {sorted(unknown)}", file=sys.stderr)
            return 2
        chosen = [m for m in MUTATIONS if m.id in want]
    if args.list:
        for mu in chosen:
            print(f"{mu.id}  {mu.file:36s} {mu.description}\n      tests: {' '.join(mu.tests)}")
        problems = check_snippets(ROOT, chosen)
        print("\n".join(["", "snippets out of date:", *problems]) if problems else "\nevery snippet found exactly once")
        return 2 if problems else 0

    tmp = Path(tempfile.mkdtemp(prefix="deepnet-mutation-"))
    copy = tmp / "tree"
    try:
        copy_tree(ROOT, copy)
        problems = check_snippets(copy, chosen)
        if problems:
            print("mutation list out of date:\n  " + "\n  ".join(problems), file=sys.stderr)
            return 2
        where = subprocess.run([sys.executable, "-c", "import deepnet; print(deepnet.__file__)"], cwd=copy,
                               env={**os.environ, "PYTHONPATH": str(copy)}, capture_output=True, text=True)
        if not where.stdout.strip().startswith(str(copy)):
            print(f"the copy's deepnet is not the one imported ({where.stdout.strip() or where.stderr.strip()})",
                  file=sys.stderr)
            return 2
        print(f"copy of the working tree: {copy}")

        if not args.no_baseline:
            for sel in dict.fromkeys(tuple(mu.tests) for mu in chosen):
                rc, out, secs = run_pytest(copy, list(sel), args.timeout)
                status = "ok" if rc == 0 else f"FAILED (exit {rc})"
                print(f"baseline {' '.join(sel)}: {status} in {secs:.0f} s", flush=True)
                if rc != 0:
                    print(out[-3000:], file=sys.stderr)
                    print("a selection fails or collects nothing without any mutation: fix that first", file=sys.stderr)
                    return 2

        rows = []
        for mu in chosen:
            path = copy / mu.file
            pristine = tmp / "pristine"
            shutil.copy2(path, pristine)
            try:
                text = path.read_text(encoding="utf-8")
                path.write_text(text.replace(mu.original, mu.mutated, 1), encoding="utf-8")
                rc, out, secs = run_pytest(copy, mu.tests, args.timeout)
            finally:
                shutil.copy2(pristine, path)          # bytes and timestamp back
            if rc is None:                 # a hang is not a caught bug: look at it
                result, by = "ERROR (timeout)", "-"
            elif rc == 0:
                result, by = "SURVIVED", "-"
            elif rc == 1 and re.search(r"^FAILED ", out, re.M) and not re.search(r"^ERROR ", out, re.M):
                result, by = "caught", first_failure(out)   # a test failed; a collection or import error is not a catch
            else:
                result, by = f"ERROR (exit {rc})", out.strip().splitlines()[-1][:80] if out.strip() else "?"
            rows.append((mu, result, by, secs))
            print(f"{mu.id} {result:8s} {secs:6.1f} s  {mu.description}  [{by}]", flush=True)

        print("\n| id | file | planted bug | result | caught by (first failing test) | s |")
        print("|---|---|---|---|---|---|")
        for mu, result, by, secs in rows:
            print(f"| {mu.id} | {mu.file} | {mu.description} | {result} | {by} | {secs:.0f} |")
        survived = [mu.id for mu, result, _, _ in rows if result == "SURVIVED"]
        errors = [mu.id for mu, result, _, _ in rows if result.startswith("ERROR")]
        caught = len(rows) - len(survived) - len(errors)
        print(f"\n{caught} of {len(rows)} caught; survived: {', '.join(survived) or 'none'}; "
              f"errors: {', '.join(errors) or 'none'}")
        return 1 if survived or errors else 0
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
