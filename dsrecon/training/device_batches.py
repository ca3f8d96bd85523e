"""Batches of E members on the training device: the data lives there, only start indices and noise travel.

`Trainer._draw` gathers every member's batch on the host and copies it to the device. For an
ensemble of a thousand members on a GPU that host work is the whole cost: per batch 16 start
indices and two float32 noise arrays of ~17 000 draws per member, from each member's own
`np.random.default_rng(seed)` (member k must see exactly the stream of a plain fit with its seed).
Here

- the concatenated training split is copied to the device once, and each batch is gathered there
  from the (E, B) start indices;
- each member's draws (start indices, observation noise, teacher noise: the order of `_draw`,
  `normal_fill`) run on a pool of host threads, one slice of the members per thread (the members'
  streams are independent, so the numbers are the same as in `_draw` whatever the thread count);
- the draws of batch i + 1 are made while the device works on batch i (one batch ahead, within an
  epoch, so that the divergence snapshot at an epoch's start still sees every stream at rest);
- the noise is scaled and added on the device in float32, in two separate operations as numpy does
  (no fused multiply-add), so the batches equal `_draw`'s bit for bit.

Used by the trainer for the "cuda" engine when no member uses the adaptive α (which needs each
clean batch on the host between the draws); `tests/test_cuda.py` holds it to the CPU fit.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from dsrecon.training.batches import SequenceSampler, normal_fill


class DeviceBatches:
    def __init__(self, sampler: SequenceSampler, device: torch.device, threads: int = 1):
        sampler.gather(np.zeros((1, 1), dtype=np.int64))  # builds the sampler's concatenated arrays and start positions
        self.sampler, self.device, self.threads = sampler, torch.device(device), max(1, int(threads))
        to = lambda a, dt=None: None if a is None else torch.as_tensor(a, dtype=dt).to(self.device)  # noqa: E731
        c = sampler._cat
        self.teacher, self.x = to(c["teacher"], torch.float32), to(c["x"], torch.float32)
        self.mask = to(c["mask"]).to(torch.float32)
        self.reg = to(c["regressors"], torch.float32)
        self.gstart = to(sampler._gstart, torch.int64)
        T, K = sampler.seq_len, sampler.K
        self.tt, self.to = torch.arange(T, device=self.device), torch.arange(K - 1, T, device=self.device)
        self.pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None

    def _buffers(self, E: int, B: int, noise: bool) -> dict[str, np.ndarray]:
        s, N = self.sampler, self.sampler.N
        shape_x, shape_d = (E, B, s.seq_len - s.K + 1, N), (E, B, s.seq_len, N)
        pin = self.device.type == "cuda"
        mk = lambda shp: (torch.empty(shp, dtype=torch.float32, pin_memory=pin).numpy() if noise else None)  # noqa: E731
        return {"starts": np.empty((E, B), dtype=np.int64), "nx": mk(shape_x), "nd": mk(shape_d)}

    def _host_draws(self, rngs: list[np.random.Generator], B: int, noise: float, buf: dict) -> None:
        """Every member's draws of one batch into ``buf``, in `_draw`'s order per member."""
        n = len(self.sampler)

        def members(lo: int, hi: int) -> None:
            for j in range(lo, hi):
                r = rngs[j]
                buf["starts"][j] = r.integers(0, n, size=B)
                if noise > 0:
                    normal_fill(r, buf["nx"][j], buf["nd"][j])

        E = len(rngs)
        if self.pool is None or E < 2 * self.threads:
            members(0, E)
            return
        cuts = np.linspace(0, E, self.threads + 1).astype(int)
        for f in [self.pool.submit(members, lo, hi) for lo, hi in zip(cuts[:-1], cuts[1:])]:
            f.result()

    def _device_batch(self, buf: dict, noise: float) -> dict:
        g = self.gstart[torch.from_numpy(buf["starts"]).to(self.device)][..., None]  # (E, B, 1)
        tt, to = g + self.tt, g + self.to
        d, x = self.teacher[tt], self.x[to]
        if noise > 0:
            nx = torch.from_numpy(buf["nx"]).to(self.device)
            nd = torch.from_numpy(buf["nd"]).to(self.device)
            nx.mul_(np.float32(noise))  # x + (noise · n) in float32, as `_draw` (no fused multiply-add)
            nd.mul_(np.float32(noise))
            x.add_(nx)
            d.add_(nd)
        return {"teacher_t": d, "x_t": x, "mask_t": self.mask[to], "reg_t": None if self.reg is None else self.reg[tt],
                "teacher": None, "x": None, "mask": None, "regressors": None}

    def epoch(self, rngs: list[np.random.Generator], n_batches: int, B: int, noise: float):
        """The n_batches batches of one epoch of the members with these generators, each drawn one
        batch ahead on a background thread."""
        E = len(rngs)
        bufs = [self._buffers(E, B, noise > 0) for _ in range(2 if n_batches > 1 else 1)]
        err: list[BaseException] = []

        def draw(i: int) -> None:
            try:
                self._host_draws(rngs, B, noise, bufs[i % len(bufs)])
            except BaseException as e:  # noqa: BLE001 - re-raised in the trainer's thread
                err.append(e)

        ahead: threading.Thread | None = None
        try:
            draw(0)
            for i in range(n_batches):
                if err:
                    raise err[0]
                batch = self._device_batch(bufs[i % len(bufs)], noise)  # copies the host buffers: free to refill
                if i + 1 < n_batches:
                    ahead = threading.Thread(target=draw, args=(i + 1,), daemon=True)
                    ahead.start()
                yield batch
                if ahead is not None:
                    ahead.join()
                    ahead = None
        finally:
            if ahead is not None:
                ahead.join()
