"""Streaming 8 kHz ↔ 24 kHz resampling with a linear-phase polyphase FIR.

Why not a library: ``audioop.ratecv`` interpolates linearly with no anti-alias filter (a 5 kHz
component of the model's voice comes out at 3 kHz at full level; upsampling images sit only
~30 dB down); libsoxr is excellent but withholds 15–40 ms per stage and emits in bursts that
need a FIFO in front of the 20 ms pacer (measurements: reference/peers.md §5.4 beside DESIGN.md).
A fixed 3:1 ratio needs only one short FIR, which numpy runs in a handful of calls per frame.

The filter
    One 97-tap symmetric low-pass at 24 kHz serves both directions: passband ripple 0.006 dB to
    3.4 kHz, stopband ≥ 69.5 dB from 4.6 kHz, and "root-Nyquist" so that up-then-down is the
    identity on 0–4 kHz (G.711 codes survive an 8 → 24 → 8 kHz round trip; see
    :func:`design_root_nyquist`). Linear phase, so the group delay is exactly (97 − 1) / 2 = 48
    samples at 24 kHz = 2.0 ms per direction (16 samples at 8 kHz). ``N − 1`` is a multiple of 6
    so both one-way delays and the 8 kHz round trip (32 samples) are whole samples at either rate.

How it streams
    Each resampler is causal and keeps the last few input samples (the FIR's history) in a
    preallocated float32 buffer, so converting a signal in chunks of any length gives the same
    samples as converting it at once (up to float rounding, at most 1 LSB after rounding to
    int16). There is no look-ahead: every input sample produces its outputs immediately (the
    decimator holds back at most 2 samples of phase, never a whole frame).

How it is fast
    Outputs are computed in blocks of ``B`` with one small dense matrix ``A`` (the filter laid out
    for ``B`` consecutive outputs): the overlapping input windows of all blocks are copied into a
    contiguous matrix (one ``np.copyto`` from a precomputed strided view; ~1k floats) and a single
    ``np.matmul`` produces every output in order. Per 20 ms frame that is about 7 numpy calls and
    no allocation besides the returned view objects. Chunks longer than the preallocated capacity
    are processed in capacity-sized pieces (rare; the result is then a fresh array).

Pure: no I/O, no clock, no trio.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import as_strided

__all__ = [
    "DELAY_MS",
    "FILTER_TAPS",
    "GROUP_DELAY_24K",
    "Downsampler",
    "Upsampler",
    "design_root_nyquist",
    "lowpass_taps",
]

FILTER_TAPS: Final = 97
HIGH_RATE: Final = 24000
LOW_RATE: Final = 8000
RATIO: Final = HIGH_RATE // LOW_RATE
PASS_HZ: Final = 3400.0
STOP_HZ: Final = 4600.0

#: Group delay of the linear-phase filter, in 24 kHz samples (one direction).
GROUP_DELAY_24K: Final = (FILTER_TAPS - 1) // 2
#: The same in milliseconds (2.0 ms); identical for both directions.
DELAY_MS: Final = GROUP_DELAY_24K * 1000 / HIGH_RATE

_INT16_MIN: Final = -32768.0
_INT16_MAX: Final = 32767.0


def design_root_nyquist(
    taps: int = FILTER_TAPS, *, nyquist_weight: float = 1.0, iterations: int = 40
) -> npt.NDArray[np.float64]:
    """Design the symmetric low-pass ``h`` used both ways (this is how the constants below were made).

    Why "root-Nyquist": a plain low-pass (e.g. Kaiser-windowed sinc cut at 4 kHz) meets the
    one-way targets but halves the 3.4–4 kHz band on each pass, so a G.711 frame that goes 8 → 24 →
    8 kHz comes back off the codec's levels and is quantised a second time (measured: 1.5 dB worse
    than G.711 alone on the caller recording). Here ``3·(h∗h)`` sampled every 3rd tap is a unit
    impulse (a Nyquist filter at 8 kHz), so up then down is the identity on the whole 0–4 kHz band
    and the codes survive the round trip unchanged, while ``h`` alone still stops ≥ 69 dB from
    4.6 kHz.

    Method: minimise the stopband (4.6–12 kHz) response, iteratively re-weighted towards minimax,
    plus ``nyquist_weight`` × the Nyquist error, Gauss-Newton on the quadratic Nyquist term; start
    from a Kaiser-windowed sinc. About 60 ms, so the result is stored as ``_HALF_TAPS`` rather
    than recomputed at import; a unit test checks that this function still reproduces it.
    """
    centre = (taps - 1) // 2
    half = centre + 1
    # h = fold @ p: a symmetric filter from its centre tap and one side.
    fold = np.zeros((taps, half))
    fold[np.arange(taps), np.abs(np.arange(taps) - centre)] = 1.0
    grid = np.linspace(STOP_HZ, HIGH_RATE / 2, 2000)
    stop = np.cos(2 * np.pi * np.outer(grid / HIGH_RATE, np.arange(taps) - centre)) @ fold
    n = np.arange(taps) - centre
    start = (2 * 4000 / HIGH_RATE) * np.sinc(2 * 4000 / HIGH_RATE * n) * np.kaiser(taps, 6.0)
    p = (start / start.sum())[centre:]
    rows = (taps - 1) + RATIO * np.arange((taps - 1) // RATIO + 1)  # h∗h at centre, centre+3, …
    weights = np.ones(len(grid))
    for iteration in range(iterations):
        h = fold @ p
        residual = RATIO * np.convolve(h, h)[rows]
        residual[0] -= 1.0
        jac = np.zeros((len(rows), taps))
        for r, k in enumerate(rows.tolist()):
            i = np.arange(max(0, k - taps + 1), min(taps - 1, k) + 1)
            jac[r, i] = 2 * RATIO * h[k - i]
        jac = jac @ fold
        quad = stop.T @ (weights[:, None] * stop) / len(grid)
        p = np.linalg.solve(
            quad + nyquist_weight * jac.T @ jac + 1e-12 * np.eye(half),
            nyquist_weight * jac.T @ (jac @ p - residual),
        )
        if iteration >= 10:  # re-weight towards equiripple once the Nyquist part has settled
            magnitude = np.abs(stop @ p)
            weights = weights * magnitude / np.sqrt(np.mean(magnitude**2))
            weights /= weights.mean()
    result: npt.NDArray[np.float64] = fold @ p
    return result


# Output of design_root_nyquist(): centre tap first, then one side (the filter is symmetric).
# Stopband ≥ 69.5 dB from 4.6 kHz, passband ripple 0.006 dB to 3.4 kHz, Nyquist error −75 dB.
# fmt: off
_HALF_TAPS: Final = (
    0.34214401154299545, 0.2796326828641666, 0.1325881532426139,
    -0.008709794950975468, -0.07152367643790197, -0.048743826297693284,
    0.008413164699521128, 0.04059358894553145, 0.027092708802533384,
    -0.007938404125055185, -0.02740304922742427, -0.01691477471928591,
    0.007313148392830555, 0.019733291350080034, 0.010975605173319088,
    -0.006572680659954168, -0.014561188704246681, -0.007145623284721842,
    0.005756972586824294, 0.010792156159956254, 0.004562693742289383,
    -0.00490745236197185, -0.007937412770386724, -0.0027993613619998817,
    0.004063831066113179, 0.005743202804709164, 0.0016084715442983143,
    -0.003261297043996085, -0.004058789059554776, -0.0008286103292738952,
    0.0025283317071096868, 0.0027820924846420135, 0.0003444825195149412,
    -0.0018853168285345116, -0.0018354386621727372, -6.905965931421801e-05,
    0.0013440046245689822, 0.001154530454592126, -6.486422547504839e-05,
    -0.0009078211654072725, -0.0006837381719449088, 0.00010887075106073329,
    0.0005728852121757754, 0.0003746869754957449, -0.0001008284868733227,
    -0.0003295960234408473, -0.00018962683235463932, 5.3525578434449244e-05,
    0.0002397069769306752,
)
# fmt: on


def lowpass_taps() -> npt.NDArray[np.float64]:
    """The 97-tap prototype low-pass at 24 kHz (symmetric, linear phase, DC gain 1.0001)."""
    half = np.asarray(_HALF_TAPS, dtype=np.float64)
    return np.concatenate([half[:0:-1], half])


_TAPS: Final = lowpass_taps()
_TAPS.flags.writeable = False


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class _BlockFir:
    """Shared machinery: a float32 input buffer with FIR history, block windows and outputs.

    Layout of ``self._buf``: ``[history (hist samples) | new input | slack for the last block]``.
    Block ``b`` reads ``buf[start + b*stride : start + b*stride + width]`` and produces
    ``outs_per_block`` outputs as ``window @ A.T``.
    """

    def __init__(
        self,
        *,
        matrix_t: npt.NDArray[np.float32],
        stride: int,
        history: int,
        capacity: int,
        max_offset: int,
        out_dtype: npt.DTypeLike,
    ) -> None:
        width, outs_per_block = matrix_t.shape
        self._at = matrix_t
        self._stride = stride
        self._width = width
        self._outs_per_block = outs_per_block
        self._hist = history
        self._capacity = capacity
        max_blocks = _ceil_div(capacity, stride) + 1
        # Slack so that the (partly unused) last block never reads past the buffer.
        size = max(history + capacity, max_offset + (max_blocks - 1) * stride + width)
        self._buf = np.zeros(size, dtype=np.float32)
        itemsize = self._buf.itemsize
        # One read-only strided view per start offset, built once; slicing them per frame is cheap.
        self._views = [
            as_strided(
                self._buf[offset:],
                shape=(max_blocks, width),
                strides=(stride * itemsize, itemsize),
                writeable=False,
            )
            for offset in range(max_offset + 1)
        ]
        self._max_blocks = max_blocks
        self._win = np.zeros((max_blocks, width), dtype=np.float32)
        self._out = np.zeros((max_blocks, outs_per_block), dtype=np.float32)
        self._flat_out = self._out.reshape(-1)
        self._out16 = np.zeros(max_blocks * outs_per_block, dtype=out_dtype)

    def input_slot(self, n: int) -> npt.NDArray[np.float32]:
        return self._buf[self._hist : self._hist + n]

    def run(self, offset: int, n_in: int, n_out: int) -> npt.NDArray[Any]:
        """Compute ``n_out`` outputs from windows starting at ``offset``, then keep the history."""
        if n_out:
            blocks = _ceil_div(n_out, self._outs_per_block)
            win = self._win[:blocks]
            np.copyto(win, self._views[offset][:blocks])
            out = self._out[:blocks]
            np.matmul(win, self._at, out=out)
            flat = self._flat_out[:n_out]
            # Round to nearest, then saturate: the FIR can overshoot full scale on clipped input.
            np.rint(flat, out=flat)
            np.clip(flat, _INT16_MIN, _INT16_MAX, out=flat)
            result = self._out16[:n_out]
            np.copyto(result, flat, casting="unsafe")
        else:
            result = self._out16[:0]
        # Slide: the last ``hist`` samples seen become the history of the next chunk. numpy
        # copies overlapping slices correctly (it buffers when source and target overlap).
        hist = self._hist
        self._buf[:hist] = self._buf[n_in : n_in + hist]
        return result

    def reset(self) -> None:
        self._buf[: self._hist] = 0.0


class Upsampler:
    """8 kHz → 24 kHz, streaming. Every input sample yields exactly 3 output samples.

    ``process*`` returns a view of an internal int16 buffer that the next call overwrites;
    encode or copy it before calling again.
    """

    def __init__(self, *, capacity: int = 1600, block: int = 16, out_dtype: npt.DTypeLike = "<i2") -> None:
        phases = _ceil_div(FILTER_TAPS, RATIO)  # taps per polyphase branch
        padded = np.zeros(phases * RATIO)
        padded[:FILTER_TAPS] = _TAPS
        # Branch r holds taps r, r+3, r+6, …; ×3 restores the level lost to zero-stuffing.
        branches = RATIO * padded.reshape(phases, RATIO).T  # (3, phases)
        width = block + phases - 1
        matrix = np.zeros((RATIO * block, width))
        for k in range(block):
            for r in range(RATIO):
                # y[3m + r] = Σ_i branch_r[i] · x[m − i]; x[m − i] sits at window column k + phases-1-i.
                matrix[RATIO * k + r, k : k + phases] = branches[r, ::-1]
        self._fir = _BlockFir(
            matrix_t=np.ascontiguousarray(matrix.T, dtype=np.float32),
            stride=block,
            history=phases - 1,
            capacity=capacity,
            max_offset=0,
            out_dtype=out_dtype,
        )
        self.capacity = capacity

    def process(self, samples: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """Resample 8 kHz samples (any real dtype, int16 scale) to 24 kHz int16."""
        n = len(samples)
        if n > self.capacity:
            return np.concatenate(
                [self.process(samples[i : i + self.capacity]).copy() for i in range(0, n, self.capacity)]
            )
        self._fir.input_slot(n)[:] = samples
        return self._fir.run(0, n, RATIO * n)

    def process_codes(self, codes: npt.NDArray[np.uint8], table: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
        """Decode G.711 ``codes`` through ``table`` straight into the filter, then resample."""
        n = len(codes)
        if n > self.capacity:
            return np.concatenate(
                [self.process_codes(codes[i : i + self.capacity], table).copy() for i in range(0, n, self.capacity)]
            )
        np.take(table, codes, out=self._fir.input_slot(n))
        return self._fir.run(0, n, RATIO * n)

    def reset(self) -> None:
        """Forget the history (the next chunk starts from silence)."""
        self._fir.reset()


class Downsampler:
    """24 kHz → 8 kHz, streaming, anti-aliased.

    Output ``k`` is the filtered signal at input time ``3k``. A chunk whose length is not a multiple
    of 3 leaves a phase that is carried into the next chunk, so a chunk of 1 or 2 samples may
    produce no output at all.

    ``process`` returns a view of an internal int16 buffer that the next call overwrites.
    """

    def __init__(self, *, capacity: int = 4800, block: int = 16, out_dtype: npt.DTypeLike = "=i2") -> None:
        width = RATIO * (block - 1) + FILTER_TAPS
        matrix = np.zeros((block, width))
        for k in range(block):
            # Window column c holds x[t − (N−1) + c] for output time t, so the taps go in reversed.
            matrix[k, RATIO * k : RATIO * k + FILTER_TAPS] = _TAPS[::-1]
        self._fir = _BlockFir(
            matrix_t=np.ascontiguousarray(matrix.T, dtype=np.float32),
            stride=RATIO * block,
            history=FILTER_TAPS - 1,
            capacity=capacity,
            max_offset=RATIO - 1,
            out_dtype=out_dtype,
        )
        self.capacity = capacity
        # Index, within the next chunk, of the input sample at which the next output falls (0..2).
        self._offset = 0

    def process(self, samples: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """Resample 24 kHz samples (any real dtype, int16 scale) to 8 kHz int16."""
        n = len(samples)
        if n > self.capacity:
            # Pieces are a multiple of 3 long, so every piece starts at the same phase.
            step = self.capacity - self.capacity % RATIO
            return np.concatenate([self.process(samples[i : i + step]).copy() for i in range(0, n, step)])
        offset = self._offset
        n_out = _ceil_div(n - offset, RATIO) if n > offset else 0
        self._fir.input_slot(n)[:] = samples
        result = self._fir.run(offset, n, n_out)
        self._offset = offset + RATIO * n_out - n
        return result

    def reset(self) -> None:
        """Forget the history and the phase (the next chunk starts from silence)."""
        self._fir.reset()
        self._offset = 0
