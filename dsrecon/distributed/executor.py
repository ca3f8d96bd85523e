"""Run independent jobs on Ray, or on a local process pool when Ray is not installed.

:func:`run_jobs` calls ``fn(job)`` for each job (a picklable dict) with one CPU (and
``gpus_per_job`` GPUs) per job, at most ``max_parallel`` at a time, and yields
``(job, result)`` as jobs finish. ``fn`` must catch its own errors and return them as a result
(``{"status": "failed", "error": ...}``); a worker that dies (killed, out of memory) is reported
the same way by the executor, so one bad job never stops the others.

Ray is used when it imports and ``DSRECON_NO_RAY`` is unset; ``address`` None starts (or joins,
as `ray.init()` does) a local Ray instance, ``"auto"`` or ``"ray://host:10001"`` or ``"host:port"``
joins an existing cluster.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator

from dsrecon._interrupt import install_worker_handlers
from dsrecon.errors import DsreconError

NO_RAY_ENV = "DSRECON_NO_RAY"


def ray_available() -> bool:
    """True when Ray imports and the DSRECON_NO_RAY environment variable is not set."""
    if os.environ.get(NO_RAY_ENV, "").strip() not in ("", "0"):
        return False
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    text = msg[0] if msg else ""
    if isinstance(e, DsreconError) and text:  # user/data errors are already one readable line
        return text
    return f"{e.__class__.__name__}: {text}" if text else e.__class__.__name__


def limit_threads() -> None:
    """One BLAS/torch thread per worker: parallelism comes from running jobs side by side."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    import torch

    torch.set_num_threads(1)


def _call(fn: Callable[[dict], dict], job: dict) -> dict:
    limit_threads()
    try:
        return fn(job)
    except BaseException as e:  # noqa: BLE001 - anything a job raises is that job's failure
        return {"status": "failed", "error": one_line(e)}


def init_ray(address: str | None, log: Callable[[str], None]) -> bool:
    """ray.init (quietly, no dashboard) unless already initialised. Returns True when this call started it."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
    if address:
        kwargs.pop("include_dashboard")  # only for a new local instance
    try:
        ray.init(address=address or None, **kwargs)
    except ConnectionError as e:
        raise DsreconError(f"--address {address}: cannot connect to a Ray cluster ({one_line(e)})") from None
    except Exception as e:  # noqa: BLE001 - Ray raises many kinds at start-up; one line for the user
        where = f"--address {address}" if address else "local Ray"
        raise DsreconError(f"{where}: Ray failed to start ({one_line(e)})") from None
    res = ray.cluster_resources()
    log(f"ray: {'connected to ' + address if address else 'local instance'}; {int(res.get('CPU', 0))} CPU(s), "
        f"{int(res.get('GPU', 0))} GPU(s) on {len([n for n in ray.nodes() if n.get('Alive')])} node(s)")
    return True


def run_jobs(fn: Callable[[dict], dict], jobs: list[dict], *, max_parallel: int | None = None, gpus_per_job: float = 0.0,
             address: str | None = None, use_ray: bool | None = None, log: Callable[[str], None] = lambda s: None,
             ) -> Iterator[tuple[dict, dict]]:
    """Yield (job, result) as jobs finish; see the module docstring."""
    if max_parallel is not None and max_parallel < 1:
        raise DsreconError(f"--max-parallel must be at least 1, got {max_parallel}")
    if gpus_per_job < 0:
        raise DsreconError(f"--gpus-per-fit must be >= 0, got {gpus_per_job}")
    if not jobs:
        return
    if use_ray is None:
        use_ray = ray_available()
    if use_ray:
        yield from _run_ray(fn, jobs, max_parallel, gpus_per_job, address, log)
    else:
        if address:
            raise DsreconError(f"--address {address}: Ray is not available (pip install 'dsrecon[distributed]')")
        yield from _run_pool(fn, jobs, max_parallel, log)


def _run_ray(fn, jobs, max_parallel, gpus_per_job, address, log) -> Iterator[tuple[dict, dict]]:
    import ray

    started = init_ray(address, log)
    try:
        remote = ray.remote(_call).options(num_cpus=1, num_gpus=gpus_per_job, max_retries=1)
        limit = max_parallel or len(jobs)
        pending: dict[Any, dict] = {}
        queue = list(jobs)
        while queue or pending:
            while queue and len(pending) < limit:
                job = queue.pop(0)
                pending[remote.remote(fn, job)] = job
            try:
                done, _ = ray.wait(list(pending), num_returns=1)
            except KeyboardInterrupt:  # Ctrl-C / SIGTERM: interrupt the running fits (they keep their checkpoints)
                for ref in pending:
                    ray.cancel(ref, force=False)
                try:
                    ray.wait(list(pending), num_returns=len(pending), timeout=30)
                except Exception:  # noqa: BLE001 - cancelled tasks raise; we are leaving anyway
                    pass
                raise
            for ref in done:
                job = pending.pop(ref)
                try:
                    res = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - worker died, task cancelled, …
                    res = {"status": "failed", "error": one_line(e)}
                yield job, res
    finally:
        if started:
            ray.shutdown()


#: set by the driver on Ctrl-C / SIGTERM: pool workers then start no further job
_STOP = None


def _pool_init(stop=None) -> None:
    global _STOP
    _STOP = stop
    limit_threads()
    # the driver passes Ctrl-C / SIGTERM on as SIGINT: the worker's fit stops as the CLI's would,
    # and an interrupt landing in numba's first compilation is neither printed nor lost
    install_worker_handlers()


def _call_with_env(fn: Callable[[dict], dict], job: dict, env: dict[str, str]) -> dict:
    """_call with the submitting process's environment (a forkserver worker inherits the
    environment of the server's start, not of the submit)."""
    if _STOP is not None and _STOP.is_set():
        return {"status": "failed", "error": "interrupted before it started"}
    for k in set(os.environ) - set(env):
        del os.environ[k]
    os.environ.update(env)
    return _call(fn, job)


def _pool_context():
    """forkserver (spawn where it does not exist): no fork of a parent whose OpenMP/torch threads may
    be running; the server imports torch and dsrecon once, and every worker forks from it."""
    import multiprocessing as mp

    try:
        ctx = mp.get_context("forkserver")
    except ValueError:  # pragma: no cover - Windows
        return mp.get_context("spawn")
    ctx.set_forkserver_preload(["torch", "dsrecon.distributed.cohort", "dsrecon.distributed.sweep", "dsrecon.estimators.load", "dsrecon.io.load"])
    return ctx


def _run_pool(fn, jobs, max_parallel, log) -> Iterator[tuple[dict, dict]]:
    import concurrent.futures as cf

    n = min(max_parallel or os.cpu_count() or 1, len(jobs))
    log(f"Ray is not available ({'DSRECON_NO_RAY is set' if os.environ.get(NO_RAY_ENV) else 'not installed'}): "
        f"running on a local process pool with {n} worker(s)")
    ctx = _pool_context()
    stop = ctx.Event()
    pool = cf.ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_pool_init, initargs=(stop,))
    try:
        env = dict(os.environ)
        futs = {pool.submit(_call_with_env, fn, job, env): job for job in jobs}
        for fut in cf.as_completed(futs):
            job = futs[fut]
            try:
                res = fut.result()
            except Exception as e:  # noqa: BLE001 - a worker process died
                res = {"status": "failed", "error": one_line(e)}
            yield job, res
    except KeyboardInterrupt:
        stop.set()
        _interrupt_pool(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _interrupt_pool(pool) -> None:
    """Ctrl-C or SIGTERM reached the driver: cancel the queued jobs and send SIGINT to the workers,
    so each running fit stops as after Ctrl-C (its checkpoint kept for a rerun, no temporary files);
    the caller's shutdown then waits for them."""
    import signal as _signal

    for item in list(getattr(pool, "_pending_work_items", {}).values()):
        item.future.cancel()
    for pr in list(getattr(pool, "_processes", {}).values()):
        try:
            os.kill(pr.pid, _signal.SIGINT)
        except (ProcessLookupError, TypeError):
            pass
