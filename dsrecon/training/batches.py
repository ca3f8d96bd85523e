"""Prepared training data and uniform sequence sampling across recordings (ALGORITHMS.md §4).

Sequences never cross a recording boundary; censored frames stay on the grid and are masked out
of the loss (and of the teacher signals).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsrecon.errors import DataError


@dataclass
class Prepared:
    """One recording's training split in normalised units.

    x: (T, N) observations; mask: (T,) valid frames; teacher: (T, N) deconvolved latent
    estimate, NaN where unreliable; regressors: (T, R) or None.
    """

    x: np.ndarray
    mask: np.ndarray
    teacher: np.ndarray
    regressors: np.ndarray | None
    source: str = ""


class SequenceSampler:
    """Draw batches of (teacher, target, loss mask, regressors) sequences of latent length T̃.

    A sequence starting at s uses teacher d[s : s+T̃] (d[s] initialises the state) and targets
    x[s+K−1 : s+T̃] (the valid convolution outputs).
    """

    def __init__(self, recs: list[Prepared], seq_len: int, K: int):
        if seq_len < K:
            raise DataError(f"--sequence-length {seq_len} is shorter than the kernel ({K} taps); it must be >= K")
        self.recs, self.seq_len, self.K = recs, seq_len, K
        starts = []
        for i, r in enumerate(recs):
            T = r.x.shape[0]
            ok0 = np.isfinite(r.teacher).all(axis=1)
            s = np.arange(0, max(T - seq_len + 1, 0))
            s = s[ok0[s]] if s.size else s
            # a sequence must contain at least one valid target frame
            if s.size:
                valid = np.array([r.mask[j + K - 1 : j + seq_len].any() for j in s])
                s = s[valid]
            starts.append(np.stack([np.full(s.size, i), s], 1) if s.size else np.zeros((0, 2), int))
        self.starts = np.concatenate(starts) if starts else np.zeros((0, 2), int)
        if self.starts.shape[0] == 0:
            lens = ", ".join(str(r.x.shape[0]) for r in recs)
            raise DataError(
                f"{recs[0].source}: training series too short ({lens} frames) for the kernel ({K} taps) plus one sequence "
                f"({seq_len} frames) with reliable teacher signals; use more data, a shorter --sequence-length or a smaller --test-fraction"
            )
        self.N = recs[0].x.shape[1]
        self.R = 0 if recs[0].regressors is None else recs[0].regressors.shape[1]

    def __len__(self) -> int:
        return self.starts.shape[0]

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        idx = rng.integers(0, len(self), size=batch_size)
        T, K = self.seq_len, self.K
        d = np.empty((batch_size, T, self.N), np.float32)
        x = np.empty((batch_size, T - K + 1, self.N), np.float32)
        m = np.empty((batch_size, T - K + 1), bool)
        reg = np.empty((batch_size, T, self.R), np.float32) if self.R else None
        for b, (ri, s) in enumerate(self.starts[idx]):
            r = self.recs[ri]
            d[b] = r.teacher[s : s + T]
            x[b] = r.x[s + K - 1 : s + T]
            m[b] = r.mask[s + K - 1 : s + T]
            if reg is not None:
                reg[b] = r.regressors[s : s + T]
        return {"teacher": d, "x": x, "mask": m, "regressors": reg}


#: default latent sequence length T̃ (ALGORITHMS.md §4)
DEFAULT_SEQUENCE_LENGTH = 200


def default_sequence_length(n_frames: list[int], K: int, test_fraction: float) -> tuple[int, int]:
    """The default T̃ for recordings of these lengths and a K-tap kernel → (T̃, usable frames).

    200 (at least K + 39), but at most half of the shortest training split's frames with a reliable
    teacher signal (so that many distinct sequence starts remain), and never below K + 1.
    """
    seq = max(DEFAULT_SEQUENCE_LENGTH, K + 39)
    usable = min(int(n - round(n * test_fraction)) for n in n_frames) - int(np.ceil(0.25 * K))
    if seq > usable // 2 and usable >= K + 1:
        seq = max(K + 1, usable // 2)
    return seq, usable
