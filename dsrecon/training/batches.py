"""Prepared training data and uniform sequence sampling across recordings (docs/method.md §4).

Sequences never cross a recording boundary; censored frames stay on the grid and are masked out
of the loss (and of the teacher signals).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsrecon.errors import DataError


def normal_fill(rng: np.random.Generator, *outs: np.ndarray) -> None:
    """Fill float32 arrays with standard normal draws from a member's stream: one 63-bit seed from
    ``rng``, then torch's CPU generator (about twice as fast as numpy's float32 normals for a batch
    of whole-brain sequences, where the batch noise was a fifth of the epoch; the same numbers
    whatever the thread count). The arrays are filled in order."""
    import torch

    g = torch.Generator().manual_seed(int(rng.integers(0, 2**63 - 1)))
    for a in outs:
        torch.randn(a.shape, generator=g, dtype=torch.float32, out=torch.from_numpy(a))


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
    inputs: np.ndarray | None = None  # (T, K) external inputs of the frames, or None


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
        """One batch: teacher (B, T̃, N), x (B, T̃−K+1, N), mask (B, T̃−K+1), regressors (B, T̃, R) or None,
        inputs (B, T̃, K) or None."""
        return {k: None if v is None else v[0] for k, v in self.gather(rng.integers(0, len(self), size=batch_size)[None]).items()}

    def gather(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """The sequences of start indices idx (E, B) (E members' batches) as (E, B, …) arrays, one fancy index each."""
        if not hasattr(self, "_cat"):  # the recordings end to end, and each start's position there
            lens = np.array([r.x.shape[0] for r in self.recs])
            offsets = np.concatenate([[0], np.cumsum(lens)[:-1]])
            cat = lambda a: None if a[0] is None else np.concatenate(a)  # noqa: E731
            self._cat = {k: cat([getattr(r, k) for r in self.recs]) for k in ("teacher", "x", "mask", "regressors", "inputs")}
            self._gstart = offsets[self.starts[:, 0]] + self.starts[:, 1]
        T, K = self.seq_len, self.K
        g = self._gstart[idx][..., None]  # (E, B, 1)
        tt, to = g + np.arange(T), g + np.arange(K - 1, T)
        c = self._cat
        return {"teacher": c["teacher"][tt].astype(np.float32, copy=False), "x": c["x"][to].astype(np.float32, copy=False), "mask": c["mask"][to],
                "regressors": None if c["regressors"] is None else c["regressors"][tt].astype(np.float32, copy=False),
                "inputs": None if c["inputs"] is None else c["inputs"][tt].astype(np.float32, copy=False)}


#: default latent sequence length T̃ (docs/method.md §4)
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
