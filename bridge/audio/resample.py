"""Streaming resampling between 8, 16 and 24 kHz with linear-phase polyphase FIRs.

Why not a library: ``audioop.ratecv`` interpolates linearly with no anti-alias filter (a 5 kHz
component of the model's voice comes out at 3 kHz at full level; upsampling images sit only
~30 dB down); libsoxr (https://github.com/dofuuz/python-soxr) filters well but withholds 15–40 ms
per stage and emits in bursts that would need a FIFO in front of the 20 ms pacer (measured:
bench/README.md, "Audio conversion"). Three fixed ratios need only three short FIRs, which numpy
runs in a handful of calls per frame.

The filters (one low-pass per pair of rates, used both ways, run at ``lcm`` of the two rates)

=============  ==========  =====  ==================  ==========  =====================  =======
rates          runs at     taps   passband (± dB)     stopband    design                 delay
=============  ==========  =====  ==================  ==========  =====================  =======
8 ↔ 24 kHz     24 kHz      97     0–3.4 kHz (0.006)   ≥ 69.5 dB   root-Nyquist, below    2.0 ms
8 ↔ 16 kHz     16 kHz      61     0–3.4 kHz (0.005)   ≥ 69.5 dB   Kaiser-windowed sinc   1.875 ms
16 ↔ 24 kHz    48 kHz      109    0–7 kHz (0.005)     ≥ 69.5 dB   Kaiser-windowed sinc   1.125 ms
=============  ==========  =====  ==================  ==========  =====================  =======

Each transition band is centred on the lower rate's Nyquist frequency (3.4–4.6 kHz for 8 kHz,
7–9 kHz for 16 kHz), so nothing that would fold into the band the lower rate carries survives:
300–3400 Hz is the telephone band of G.711, 50–7000 Hz the wideband speech band of ITU-T G.722
(https://www.itu.int/rec/T-REC-G.722), which is what 16 kHz telephony carries. The delay is
``(taps − 1) / 2`` samples at the filter's rate; the tap counts are chosen so that it is a whole
number of samples at both rates of the pair.

The 8 ↔ 24 kHz filter is "root-Nyquist" so that a G.711 frame crossing a 24 kHz session and
coming back lands on the same codes (see :func:`design_root_nyquist`). The other two pairs have
no such round trip in a call (their G.711 side is the session, whose audio is never sent back),
so a plain Kaiser-windowed sinc, computed at import in microseconds, is enough.

How it streams
    One :class:`Resampler` handles any ratio ``up / down`` of the table (×3, ÷3, ×2, ÷2, ×3/2,
    ×2/3): output ``n`` is the filtered, ``up``-times zero-stuffed input at filter time ``n·down``.
    It is causal and keeps the last few input samples (the FIR's history) and the phase of the
    next output, so converting a signal in chunks of any length gives the same samples as
    converting it at once (up to float rounding, at most 1 LSB after rounding to int16). There is
    no look-ahead: after ``T`` input samples exactly ``ceil(T·up/down)`` outputs have come out; a
    decimator holds back at most ``down − 1`` samples of phase, never a frame.

How it is fast
    Outputs are computed in blocks of ``block·up`` with one small dense matrix per starting phase
    (the polyphase filter laid out for a block of consecutive outputs): the overlapping input
    windows of all blocks are copied into a contiguous matrix (one ``np.copyto`` from a
    precomputed strided view) and a single ``np.matmul`` produces every output in order. Per 20 ms
    frame that is about 7 numpy calls and no allocation besides the returned view objects. Chunks
    longer than the preallocated capacity are processed in pieces (rare; the result is then a
    fresh array).

Pure: no I/O, no clock, no trio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import as_strided

__all__ = [
    "FILTERS",
    "FilterDesign",
    "Resampler",
    "design_kaiser",
    "design_root_nyquist",
    "filter_for",
]

# The root-Nyquist design for 8 ↔ 24 kHz.
_RN_TAPS: Final = 97
_RN_RATE: Final = 24000
_RN_RATIO: Final = 3
_RN_STOP_HZ: Final = 4600.0

# float32 scalars: clipping a float32 buffer against them needs no casting.
_INT16_MIN: Final = np.float32(-32768.0)
_INT16_MAX: Final = np.float32(32767.0)


def design_root_nyquist(
    taps: int = _RN_TAPS, *, nyquist_weight: float = 1.0, iterations: int = 40
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
    grid = np.linspace(_RN_STOP_HZ, _RN_RATE / 2, 2000)
    stop = np.cos(2 * np.pi * np.outer(grid / _RN_RATE, np.arange(taps) - centre)) @ fold
    n = np.arange(taps) - centre
    start = (2 * 4000 / _RN_RATE) * np.sinc(2 * 4000 / _RN_RATE * n) * np.kaiser(taps, 6.0)
    p = (start / start.sum())[centre:]
    rows = (taps - 1) + _RN_RATIO * np.arange((taps - 1) // _RN_RATIO + 1)  # h∗h at centre, centre+3, …
    weights = np.ones(len(grid))
    for iteration in range(iterations):
        h = fold @ p
        residual = _RN_RATIO * np.convolve(h, h)[rows]
        residual[0] -= 1.0
        jac = np.zeros((len(rows), taps))
        for r, k in enumerate(rows.tolist()):
            i = np.arange(max(0, k - taps + 1), min(taps - 1, k) + 1)
            jac[r, i] = 2 * _RN_RATIO * h[k - i]
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


def root_nyquist_taps() -> npt.NDArray[np.float64]:
    """The stored 97-tap 8 ↔ 24 kHz prototype (symmetric, linear phase, DC gain 1.0001)."""
    half = np.asarray(_HALF_TAPS, dtype=np.float64)
    return np.concatenate([half[:0:-1], half])


def design_kaiser(
    rate: int, pass_hz: float, stop_hz: float, taps: int, attenuation_db: float
) -> npt.NDArray[np.float64]:
    """A linear-phase low-pass at ``rate``: Kaiser-windowed sinc cut midway between pass and stop.

    Kaiser's β for ``attenuation_db`` (Oppenheim & Schafer, "Discrete-Time Signal Processing",
    eq. 7.75); normalised to a DC gain of exactly 1.
    """
    beta = 0.1102 * (attenuation_db - 8.7)
    cutoff = (pass_hz + stop_hz) / 2 / rate
    n = np.arange(taps) - (taps - 1) / 2
    h = 2 * cutoff * np.sinc(2 * cutoff * n) * np.kaiser(taps, beta)
    result: npt.NDArray[np.float64] = h / h.sum()
    return result


@dataclass(frozen=True, eq=False)
class FilterDesign:
    """The low-pass shared by both directions between ``low_rate`` and ``high_rate``."""

    low_rate: int
    high_rate: int
    pass_hz: float
    """Upper edge of the band the lower rate carries (flat to ±0.5 dB up to here)."""
    stop_hz: float
    """From here on, everything is stopped (≥ 60 dB): nothing folds into 0–``pass_hz``."""
    taps: npt.NDArray[np.float64]
    """The prototype at :attr:`rate`, read-only."""

    @property
    def rate(self) -> int:
        """The rate the filter runs at: the least common multiple of the two rates."""
        return math.lcm(self.low_rate, self.high_rate)

    @property
    def group_delay(self) -> int:
        """Delay of the linear-phase filter in samples at :attr:`rate` (one direction)."""
        return (len(self.taps) - 1) // 2

    @property
    def delay_ms(self) -> float:
        """The same in milliseconds, identical for both directions."""
        return self.group_delay * 1000 / self.rate


def _frozen(taps: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    taps.flags.writeable = False  # shared by every call; nobody may patch it
    return taps


#: The three filters, keyed by (lower rate, higher rate).
FILTERS: Final[dict[tuple[int, int], FilterDesign]] = {
    (8000, 24000): FilterDesign(8000, 24000, 3400.0, 4600.0, _frozen(root_nyquist_taps())),
    (8000, 16000): FilterDesign(8000, 16000, 3400.0, 4600.0, _frozen(design_kaiser(16000, 3400, 4600, 61, 70.0))),
    (16000, 24000): FilterDesign(16000, 24000, 7000.0, 9000.0, _frozen(design_kaiser(48000, 7000, 9000, 109, 70.0))),
}


def filter_for(rate_a: int, rate_b: int) -> FilterDesign:
    """The filter between two rates (either order); ``ValueError`` for a pair outside the table."""
    design = FILTERS.get((min(rate_a, rate_b), max(rate_a, rate_b)))
    if design is None:
        raise ValueError(f"no resampling filter for {rate_a} Hz ↔ {rate_b} Hz")
    return design


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class Resampler:
    """``in_rate`` → ``out_rate``, streaming, for any pair of :data:`FILTERS`.

    ``process*`` returns a view of an internal int16 buffer (``out_dtype``: ``"<i2"`` for wire
    L16, ``"=i2"`` for audioop) that the next call overwrites; encode or copy it before calling
    again. A chunk may produce no output at all when decimating (the phase is carried).

    Buffer layout: ``[history (taps per phase − 1) | new input | slack for the last block]``. Block
    ``b`` of a chunk reads ``buf[offset + b·stride :][:width]`` and produces ``block·up`` outputs
    as ``window @ A[phase]``, where ``offset`` and ``phase`` locate the chunk's first output.
    """

    def __init__(
        self,
        in_rate: int,
        out_rate: int,
        *,
        capacity: int | None = None,
        block: int = 16,
        out_dtype: npt.DTypeLike = "<i2",
    ) -> None:
        self.design = filter_for(in_rate, out_rate)
        self.in_rate, self.out_rate = in_rate, out_rate
        g = math.gcd(in_rate, out_rate)
        up, down = out_rate // g, in_rate // g
        self.up, self.down = up, down
        taps = self.design.taps
        per_phase = _ceil_div(len(taps), up)
        # Branch r holds taps r, r+up, r+2·up, …; ×up restores the level lost to zero-stuffing.
        padded = np.zeros(per_phase * up)
        padded[: len(taps)] = up * taps
        outs = block * up  # outputs per block: a whole number of phase cycles
        stride = block * down  # inputs consumed per block
        width = (up - 1 + (outs - 1) * down) // up + per_phase
        self._matrices = []
        # With down == 1 every chunk's outputs end on a whole input, so each chunk starts at phase 0.
        for first_phase in range(up if down > 1 else 1):
            matrix = np.zeros((outs, width))
            for q in range(outs):
                # Output q of the block falls at input index base (relative to the block's first
                # output) with phase r: y = Σ_j branch_r[j] · x[base − j], and x[base − j] sits
                # in window column base + per_phase − 1 − j, so the branch goes in reversed.
                base, r = divmod(first_phase + q * down, up)
                matrix[q, base : base + per_phase] = padded[r::up][::-1]
            self._matrices.append(np.ascontiguousarray(matrix.T, dtype=np.float32))
        self.capacity = capacity if capacity is not None else in_rate // 5  # 200 ms per call
        self._hist = per_phase - 1
        self._outs_per_block = outs
        max_offset = (down - 1) // up  # how far past the chunk start the first output can fall
        max_blocks = _ceil_div((up * self.capacity - 1) // down + 1, outs)
        size = max(self._hist + self.capacity, max_offset + (max_blocks - 1) * stride + width)
        self._buf = np.zeros(size, dtype=np.float32)
        itemsize = self._buf.itemsize
        # One read-only strided view per start offset, built once; slicing them per chunk is cheap.
        self._views = [
            as_strided(
                self._buf[offset:],
                shape=(max_blocks, width),
                strides=(stride * itemsize, itemsize),
                writeable=False,
            )
            for offset in range(max_offset + 1)
        ]
        self._win = np.zeros((max_blocks, width), dtype=np.float32)
        self._out = np.zeros((max_blocks, outs), dtype=np.float32)
        self._flat_out = self._out.reshape(-1)
        self._out16 = np.zeros(max_blocks * outs, dtype=out_dtype)
        # Where the next output falls: input index ``offset`` of the next chunk, phase 0..up-1.
        self._offset = 0
        self._phase = 0

    @property
    def delay_ms(self) -> float:
        return self.design.delay_ms

    def process(self, samples: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """Resample ``samples`` (any real dtype, int16 scale) to int16 at ``out_rate``."""
        n = len(samples)
        if n > self.capacity:
            return self._in_pieces(samples, self.process)
        self._buf[self._hist : self._hist + n] = samples
        return self._run(n)

    def process_codes(self, codes: npt.NDArray[np.uint8], table: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
        """Decode G.711 ``codes`` through ``table`` straight into the filter, then resample."""
        n = len(codes)
        if n > self.capacity:
            return self._in_pieces(codes, lambda piece: self.process_codes(piece, table))
        table.take(codes, out=self._buf[self._hist : self._hist + n])
        return self._run(n)

    def reset(self) -> None:
        """Forget the history and the phase (the next chunk starts from silence)."""
        self._buf[: self._hist] = 0.0
        self._offset = 0
        self._phase = 0

    def _in_pieces(self, data: npt.NDArray[Any], fn: Any) -> npt.NDArray[Any]:
        step = self.capacity
        pieces = [fn(data[i : i + step]).copy() for i in range(0, len(data), step)]
        return np.concatenate(pieces)

    def _run(self, n_in: int) -> npt.NDArray[Any]:
        """Compute every output whose input has arrived, then keep the history."""
        up, down, offset, phase = self.up, self.down, self._offset, self._phase
        n_out = (up * (n_in - offset) - 1 - phase) // down + 1 if n_in > offset else 0
        if n_out:
            blocks = _ceil_div(n_out, self._outs_per_block)
            win = self._win[:blocks]
            np.copyto(win, self._views[offset][:blocks])
            out = self._out[:blocks]
            np.matmul(win, self._matrices[phase], out=out)
            flat = self._flat_out[:n_out]
            # Round to nearest, then saturate: the FIR can overshoot full scale on clipped input.
            # (The ndarray methods take and clip skip the argument handling of np.take and
            # np.clip: 1–2 µs each per call with numpy 2, measured.)
            np.rint(flat, out=flat)
            flat.clip(_INT16_MIN, _INT16_MAX, out=flat)
            result = self._out16[:n_out]
            np.copyto(result, flat, casting="unsafe")
        else:
            result = self._out16[:0]
        advance = phase + n_out * down
        self._offset = offset + advance // up - n_in
        self._phase = advance % up
        # Slide: the last ``hist`` samples seen become the history of the next chunk. numpy
        # copies overlapping slices correctly (it buffers when source and target overlap).
        hist = self._hist
        self._buf[:hist] = self._buf[n_in : n_in + hist]
        return result
