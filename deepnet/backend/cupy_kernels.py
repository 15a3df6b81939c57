"""CUDA elementwise kernels for the CuPy backend (compiled on first use by CuPy)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any


def build(cupy: Any) -> SimpleNamespace:
    ek = cupy.ElementwiseKernel
    return SimpleNamespace(
        sigmoid_bwd=ek("T y, T dy", "T dx", "dx = dy * y * (T(1) - y)", "deepnet_sigmoid_bwd"),
        tanh_bwd=ek("T y, T dy", "T dx", "dx = dy * (T(1) - y * y)", "deepnet_tanh_bwd"),
        relu_bwd=ek("T y, T dy", "T dx", "dx = y > T(0) ? dy : T(0)", "deepnet_relu_bwd"),
        sgd=ek("T g, T lr", "T w", "w -= lr * g", "deepnet_sgd"),
        momentum=ek(
            "T g, T lr, T mu, bool nesterov", "T w, T v",
            "v = mu * v + g; w -= lr * (nesterov ? g + mu * v : v)",
            "deepnet_momentum"),
        # c1 = 1 − β₁ and c2 = 1 − β₂ come in computed in float64: T(1) − b2 in float32 is
        # 0.00099998713 for β₂ = 0.999, 1.3e-5 too small (found by the one-step parity check)
        adam=ek(
            "T g, T lr_t, T b1, T b2, T c1, T c2, T eps_hat, T decay", "T w, T m, T v",
            "m = b1 * m + c1 * g;"
            "v = b2 * v + c2 * g * g;"
            "w = w * decay - lr_t * m / (sqrt(v) + eps_hat)",
            "deepnet_adam"),
    )


# im2col / col2im (``ops.unfold`` / ``ops.fold``, geometry in deepnet.backend.windows).  Built
# apart from :func:`build`, on first use: their loops and integer arithmetic are beyond the
# CuPy-shaped evaluator, so that backend keeps the generic Array-API path for them.
UNFOLD_SOURCE = """
ptrdiff_t t = i;
const int kj = t % kw; t /= kw;
const int ki = t % kh; t /= kh;
const int ch = t % C; t /= C;
const int ox = t % OW; t /= OW;
const int oy = t % OH; t /= OH;
const int y = oy * sh + ki * dh - pt;
const int xx = ox * sw + kj * dw - pl;
cols = (y >= 0 && y < H && xx >= 0 && xx < W) ? x[((t * C + ch) * H + y) * W + xx] : T(0);
"""

# A gather (one thread per pixel, no atomics): the pixel at padded (yp, xp) was read by tap
# (ki, kj) of output (oy, ox) iff yp − ki·dh = oy·sh and xp − kj·dw = ox·sw with 0 ≤ oy < OH,
# 0 ≤ ox < OW; the taps' rows decrease with ki, so the loops stop at the first negative one.
def _gather(setup: str, read: str) -> str:
    """The body of a fold kernel: each pixel sums the entries of the patches that read it;
    ``setup`` declares what ``read``, the entry of tap (ki, kj) at output (oy, ox), needs."""
    return f"""
ptrdiff_t t = i;
const int xx = t % W; t /= W;
const int y = t % H; t /= H;
const int ch = t % C; t /= C;
const int yp = y + pt;
const int xp = xx + pl;
{setup}
T acc = T(0);
for (int ki = 0; ki < kh; ++ki) {{
    const int r = yp - ki * dh;
    if (r < 0) break;
    if (r % sh != 0) continue;
    const int oy = r / sh;
    if (oy >= OH) continue;
    for (int kj = 0; kj < kw; ++kj) {{
        const int s = xp - kj * dw;
        if (s < 0) break;
        if (s % sw != 0) continue;
        const int ox = s / sw;
        if (ox >= OW) continue;
        acc += {read};
    }}
}}
dx = acc;
"""


FOLD_SOURCE = _gather("const ptrdiff_t K = (ptrdiff_t)kh * kw;",
                      "cols[(((t * OH + oy) * OW + ox) * C + ch) * K + ki * kw + kj]")

#: the scalar parameters both window kernels take, in this order
WINDOW_PARAMS = "int32 C, int32 H, int32 W, int32 OH, int32 OW, int32 kh, int32 kw, int32 sh, int32 sw, " \
                "int32 pt, int32 pl, int32 dh, int32 dw"

# The transposed layout (``ops.unfold_t`` / ``ops.fold_t``): cols_t (C·kh·kw, N·OH·OW), row
# (c, i, j), column (n, oh, ow).  unfold_t: one thread per entry of cols_t, consecutive threads
# along ow (coalesced stores, reads along an image row); fold_t: the same gather as fold, whose
# reads are now coalesced too (consecutive pixels read consecutive columns of cols_t).
UNFOLD_T_SOURCE = """
ptrdiff_t t = i;
const int ox = t % OW; t /= OW;
const int oy = t % OH; t /= OH;
const int nn = t % N; t /= N;
const int kj = t % kw; t /= kw;
const int ki = t % kh; t /= kh;
const int ch = t;
const int y = oy * sh + ki * dh - pt;
const int xx = ox * sw + kj * dw - pl;
cols_t = (y >= 0 && y < H && xx >= 0 && xx < W) ? x[(((ptrdiff_t)nn * C + ch) * H + y) * W + xx] : T(0);
"""

FOLD_T_SOURCE = _gather("const ptrdiff_t NP = (ptrdiff_t)N * OH * OW;",
                        "cols_t[((ptrdiff_t)(ch * kh + ki) * kw + kj) * NP + (t * OH + oy) * OW + ox]")

#: the scalar parameters both transposed window kernels take, in this order
WINDOW_T_PARAMS = "int32 N, " + WINDOW_PARAMS


def build_windows(cupy: Any) -> SimpleNamespace:
    """The unfold (im2col) and fold (col2im) kernels, plain and transposed: one thread per output
    element each."""
    ek = cupy.ElementwiseKernel
    return SimpleNamespace(
        unfold=ek(f"raw T x, {WINDOW_PARAMS}", "T cols", UNFOLD_SOURCE, "deepnet_unfold"),
        fold=ek(f"raw T cols, {WINDOW_PARAMS}", "T dx", FOLD_SOURCE, "deepnet_fold"),
        unfold_t=ek(f"raw T x, {WINDOW_T_PARAMS}", "T cols_t", UNFOLD_T_SOURCE, "deepnet_unfold_t"),
        fold_t=ek(f"raw T cols_t, {WINDOW_T_PARAMS}", "T dx", FOLD_T_SOURCE, "deepnet_fold_t"),
    )
