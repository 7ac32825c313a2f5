"""T and T⁻¹ of a whole W+ frame in numpy, every stage group's flow in one batched pass (the default flow runner).

The same arithmetic as :class:`sganc_stream.latent.flow.RealNVP` (bitstream_spec/SPEC.md §6), reorganised so a frame
costs about 10 numpy calls per coupling instead of about 40 PyTorch calls per coupling and group:

* the rows of the G stage groups are stacked into one ``(G, R, width)`` block (R the largest group; shorter groups are
  padded with zero rows that are computed and dropped), so one batched matmul serves every group;
* a coupling's two perceptrons s and t share their first matmul (their first-layer weights side by side), and run
  their second and third layers as one batched matmul over the 2G (group, net) pairs.

Float32 throughout, like the PyTorch flow; the results differ from it only in float rounding (BLAS blocks the sums
differently): measured max |a − b| / (1 + |b|) about 7e-7 on the default face model, under SPEC §7's 1e-5 bound, so
the decoder's integer states, and conformance, are unchanged (tests/test_numpy_flow.py). numpy's BLAS should run one
thread (``OPENBLAS_NUM_THREADS=1``; these matrices are below OpenBLAS' threading threshold anyway). No torch import:
the weights are numpy arrays, copied when the runner is built.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

_NETS = ("scale", "shift")


class NumpyFlows:
    """A :class:`sganc_stream.latent.model.FlowRunner`: float32 ``(rows, width)`` → float32 ``(rows, width)``.

    ``weights[g]``: group g's RealNVP state dict (names ``layers.{k}.{scale|shift}.{0|2|4}.{weight|bias}``, arrays
    of any float dtype, ``weight`` as ``(out, in)`` like ``nn.Linear``); ``groups``: half-open row ranges.
    ValueError if the groups' flows differ in their number of couplings or their shapes.
    """

    def __init__(self, weights: list[Mapping[str, np.ndarray]], groups: list[tuple[int, int]], width: int) -> None:
        if len(weights) != len(groups) or not groups:
            raise ValueError("one flow per stage group is needed")
        self.groups, self.width = [(int(a), int(b)) for a, b in groups], width
        self._rows = max(b - a for a, b in self.groups)
        counts = {sum(1 for k in w if k.endswith(".scale.0.weight")) for w in weights}
        if len(counts) != 1:
            raise ValueError("the stage groups' flows have different numbers of couplings")
        self._layers = [self._stack(weights, k) for k in range(counts.pop())]

    @staticmethod
    def _stack(weights: list[Mapping[str, np.ndarray]], k: int) -> tuple[np.ndarray, ...]:
        """Coupling k of every group: (W1 (G, in, 2H), b1 (G, 1, 2H), W2 (2G, H, H), b2, W3 (2G, H, out), b3)."""
        def get(w: Mapping[str, np.ndarray], net: str, i: int, kind: str) -> np.ndarray:
            return np.asarray(w[f"layers.{k}.{net}.{i}.{kind}"], dtype=np.float32)

        w1 = np.stack([np.concatenate([get(w, n, 0, "weight").T for n in _NETS], 1) for w in weights])
        b1 = np.stack([np.concatenate([get(w, n, 0, "bias") for n in _NETS])[None] for w in weights])
        later = [np.stack([get(w, n, i, kind).T if kind == "weight" else get(w, n, i, kind)[None]
                           for w in weights for n in _NETS]) for i in (2, 4) for kind in ("weight", "bias")]
        return tuple(np.ascontiguousarray(a) for a in (w1, b1, *later))

    def _scale_shift(self, k: int, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """s(a) and t(a) of coupling k for the kept halves ``a`` (G, R, in) of every group."""
        w1, b1, w2, b2, w3, b3 = self._layers[k]
        g, r = a.shape[0], a.shape[1]
        h = np.matmul(a, w1)
        h += b1
        h = np.maximum(h, np.float32(0.2) * h)  # LeakyReLU(0.2)
        h = h.reshape(g, r, 2, -1).transpose(0, 2, 1, 3).reshape(2 * g, r, -1)  # (group, net) pairs
        h = np.matmul(h, w2)
        h += b2
        h = np.maximum(h, np.float32(0.2) * h)
        out = np.matmul(h, w3)
        out += b3
        out = out.reshape(g, 2, r, -1)
        return np.tanh(out[:, 0]), out[:, 1]

    def _run(self, x: np.ndarray, inverse: bool) -> np.ndarray:
        # Out-of-range input (finite W+ near 3e38) overflows to inf / NaN here, silently: the encoder refuses such a
        # proxy in one line (LatentStreamEncoder.encode), and decoded states are bounded (STATE_LIMIT).
        with np.errstate(over="ignore", invalid="ignore"):
            return self._run_checked(x, inverse)

    def _run_checked(self, x: np.ndarray, inverse: bool) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        block = np.zeros((len(self.groups), self._rows, self.width), dtype=np.float32)
        for g, (a, b) in enumerate(self.groups):
            block[g, : b - a] = x[a:b]
        even, odd = block[..., 0::2].copy(), block[..., 1::2].copy()
        order = reversed(range(len(self._layers))) if inverse else range(len(self._layers))
        for k in order:
            kept = odd if k % 2 else even
            s, t = self._scale_shift(k, kept)
            changed = even if k % 2 else odd
            changed = (changed - t) * np.exp(-s) if inverse else changed * np.exp(s) + t
            if k % 2:
                even = changed
            else:
                odd = changed
        block[..., 0::2], block[..., 1::2] = even, odd
        return np.concatenate([block[g, : b - a] for g, (a, b) in enumerate(self.groups)])

    def forward(self, x: np.ndarray) -> np.ndarray:
        """T: float32 ``(rows, width)`` W+ → float32 ``(rows, width)`` proxy."""
        return self._run(x, inverse=False)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """T⁻¹: float32 ``(rows, width)`` proxy → float32 ``(rows, width)`` W+."""
        return self._run(y, inverse=True)
