"""Memory a fit will need, estimated before any work, and a check against what the machine has.

A fit holds two large things, never at the same time:

- each validation: a free run of at least ``VAL_HORIZON`` (50 000) steps past the training data,
  all regions at once, on the CPU (validation.validation_scores). Its peak is the observation step of that
  run: `torch.nn.functional.conv1d` of the (regions, 1, steps) series with the one-channel kernel
  goes through oneDNN, which pads the single output channel to a block of 16, so it allocates
  16 × regions × steps float32 (measured: 32 GB for 10 000 regions, 6.4 GB for 2 000 regions,
  whatever the kernel length) on top of the latent trajectory and the decoded series.
- each training batch: batch × sequence length × (regions, latent state, hidden units), forward
  activations kept for backpropagation and their gradients.

10 000 regions × 50 frames used to run for minutes and then fail on that 32 GB allocation;
:func:`check_memory` says so at once, with the option that reduces it.
"""

from __future__ import annotations

import math
import os
import resource
from dataclasses import dataclass
from typing import Sequence

from dsrecon.errors import DsreconError

FLOAT32 = 4
#: oneDNN's channel block: a one-channel conv1d output is stored padded to 16 channels (measured)
CONV_CHANNEL_BLOCK = 16
#: share of the available memory a fit may plan to use (the estimate is approximate; the rest
#: is the interpreter, the data and the libraries)
USABLE_FRACTION = 0.9


@dataclass
class MemoryEstimate:
    """Peak bytes of one validation and of one training step, with what drives each."""

    validation_bytes: int
    training_bytes: int
    validation_steps: int
    n_regions: int
    state_dim: int
    batch_size: int
    sequence_length: int

    @property
    def peak_bytes(self) -> int:
        return max(self.validation_bytes, self.training_bytes)


def validation_steps(n_frames: int) -> int:
    """Length of the validation free run for a recording of ``n_frames`` frames (validation.validation_scores)."""
    from dsrecon.training.validation import VAL_HORIZON, VAL_MIN_STEPS

    n = max(int(n_frames), VAL_MIN_STEPS)
    return max(VAL_HORIZON, int(math.ceil(1.25 * n)))


def estimate_fit_memory(n_frames: Sequence[int], n_regions: int, state_dim: int, kernel_taps: int, *, batch_size: int,
                        sequence_length: int, test_fraction: float, hidden_dim: int = 0, n_params: int | None = None) -> MemoryEstimate:
    """Bytes a fit of recordings of ``n_frames`` frames with N = ``n_regions``, a backend state of
    S = ``state_dim`` (at least the latent dimension M) and a K-tap kernel needs at its peaks.

    validation (per recording, one at a time; none without a held-out tail), n = free-run steps:
        latent run n·S, decoded series and its transposed copy 2·n·N, conv1d output 16·n·N,
        observations n·N                                          → 4 B × n × (S + 19 N)
    training (B = batch_size, T = sequence_length): the batch arrays with their noise, the rollout's
        activations kept for backward (state, hidden units), the observation and loss, and their
        gradients; parameters P with gradients and two RAdam moments
                                                                  → 4 B × (B·T·(7 N + 5 S + 2 L) + 4 P)
    Checked against the peak resident memory of validation_scores() and Trainer.run_epoch(): 1 000 regions:
    validation 3.89 GB measured, 4.00 estimated; training 2 000 regions × 64 × 150: 0.83 GB
    measured, 0.93 estimated; 500 regions × 256 × 200: 1.18 measured, 1.25 estimated.
    """
    N, S, K = int(n_regions), max(int(state_dim), 1), int(kernel_taps)
    val_steps = 0
    for T in n_frames:
        if int(round(T * test_fraction)) > 0:
            val_steps = max(val_steps, validation_steps(T))
    n_lat = val_steps + K - 1 if val_steps else 0
    validation = FLOAT32 * (n_lat * S + 2 * n_lat * N + CONV_CHANNEL_BLOCK * val_steps * N + val_steps * N)
    B, T, L = int(batch_size), int(sequence_length), int(hidden_dim)
    P = n_params if n_params is not None else 2 * S * L + 3 * S + L + S * N
    training = FLOAT32 * (B * T * (7 * N + 5 * S + 2 * L) + 4 * P)
    return MemoryEstimate(int(validation), int(training), val_steps, N, S, B, T)


def available_memory() -> int:
    """Bytes this process can still allocate: the least of MemAvailable (/proc/meminfo, else the
    free physical pages), a cgroup memory limit and an address-space limit (ulimit -v)."""
    limits = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    limits.append(int(line.split()[1]) * 1024)
                    break
    except OSError:
        pass
    if not limits:
        try:
            limits.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            pass
    for lim_file, use_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                               ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(lim_file) as f:
                raw = f.read().strip()
            if raw != "max" and int(raw) < 1 << 60:
                with open(use_file) as f:
                    limits.append(max(int(raw) - int(f.read().strip()), 0))
                break
        except (OSError, ValueError):
            continue
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        used = 0
        try:
            with open("/proc/self/status") as f:
                used = next((int(ln.split()[1]) * 1024 for ln in f if ln.startswith("VmSize:")), 0)
        except OSError:
            pass
        limits.append(max(soft - used, 0))
    return min(limits) if limits else 1 << 62


def _gb(b: float) -> str:
    return f"{b / 1e9:.1f} GB" if b >= 1e8 else f"{b / 1e6:.0f} MB"


def check_memory(est: MemoryEstimate, *, device: str = "cpu", source: str = "", available: int | None = None,
                 device_available: int | None = None) -> MemoryEstimate:
    """Raise DsreconError when a peak of ``est`` exceeds the memory there is (validation always runs
    on the CPU; training on ``device``). The message gives the estimate and the option that reduces
    it. Returns ``est`` when it fits."""
    cpu = available_memory() if available is None else int(available)
    where = f"{source}: " if source else ""
    if est.validation_bytes > USABLE_FRACTION * cpu:
        raise DsreconError(
            f"{where}too large for memory: each validation free run ({est.validation_steps} steps × {est.n_regions} regions) "
            f"needs about {_gb(est.validation_bytes)}, {_gb(cpu)} are available; fit fewer regions (a coarser atlas, --pca) "
            "or fit without validation (--test-fraction 0)")
    train_avail = cpu
    if str(device).startswith("cuda") and device_available is None:
        try:
            import torch

            train_avail = int(torch.cuda.mem_get_info(torch.device(device))[0])
        except (ImportError, RuntimeError, AssertionError):
            pass
    elif device_available is not None:
        train_avail = int(device_available)
    if est.training_bytes > USABLE_FRACTION * train_avail:
        raise DsreconError(
            f"{where}too large for memory: each training batch ({est.batch_size} sequences × {est.sequence_length} steps × "
            f"{est.n_regions} regions) needs about {_gb(est.training_bytes)}, {_gb(train_avail)} are available on {device}; "
            "use a smaller --batch-size or --sequence-length")
    return est


def check_fit_memory(n_frames: Sequence[int], n_regions: int, latent_dim: int, hidden_dim: int, kernel_taps: int, opts,
                     device: str = "cpu", source: str = "", members: int = 1) -> MemoryEstimate:
    """`check_memory` for a fit about to start, from its sizes alone (before the model is built:
    building a 10 000-dimensional latent model alone takes minutes). ``opts``: the TrainOptions;
    ``members`` models at once take E times the training batch and parameters."""
    M, L = int(latent_dim), int(hidden_dim)
    est = estimate_fit_memory(n_frames, n_regions, M, kernel_taps, batch_size=opts.batch_size * int(members),
                              sequence_length=opts.sequence_length, test_fraction=opts.test_fraction, hidden_dim=L,
                              n_params=int(members) * (2 * M * L + 3 * M + L + M * int(n_regions)))
    return check_memory(est, device=str(device), source=source)


def _size(b: float) -> str:
    """Bytes as a readable size (GB up to 1000 GB, then TB; 3 significant digits)."""
    if b >= 1e12:
        return f"{b / 1e12:.3g} TB"
    return _gb(b)


def check_rows_memory(n_rows: int, bytes_per_row: int, flag: str, what: str, available: int | None = None) -> int:
    """Refuse, before anything is allocated, a command whose output of ``n_rows`` rows (about
    ``bytes_per_row`` bytes of working memory each) does not fit in the memory there is. The message
    names ``flag`` with its value, the memory it would need and the limit. Returns the bytes needed."""
    avail = available_memory() if available is None else int(available)
    need = int(n_rows) * int(bytes_per_row)
    limit = int(USABLE_FRACTION * avail)
    if need > limit:
        most = max(limit // max(int(bytes_per_row), 1), 0)
        raise DsreconError(f"{flag} {n_rows}: {what} would need about {_size(need)} of memory, more than the "
                           f"{_size(limit)} this machine can give; at most about {most:,} rows fit (give a smaller {flag})")
    return need


def free_run_row_bytes(n_regions: int, latent_dim: int) -> int:
    """Working memory per generated frame of `ConvSSM.simulate`: the float32 latent and observed runs
    with the observation's conv1d (oneDNN pads its one channel to 16, see the module doc), then the
    float64 copies returned and written: 4·(M + 19 N) + 8·(3 N + M) bytes."""
    N, M = int(n_regions), max(int(latent_dim), 1)
    return FLOAT32 * (M + 19 * N) + 8 * (3 * N + M)
