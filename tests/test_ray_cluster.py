"""fit-cohort and sweep through Ray: the embedded default (`ray.init()`), and a real local
cluster (a head and a worker node started with `ray start` on this machine) used by --address,
including a killed-and-rerun cohort. Only localhost is used.

The tests touch no Ray cluster they did not start (a user may be running one on this machine):
every instance lives in a temporary directory of its own (``--temp-dir``, ``RAY_TMPDIR``, so that
``ray.init()`` cannot find and join another cluster), binds ports chosen free, and is stopped by
terminating exactly its own processes. Never `ray stop`, which stops every cluster on the machine."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")  # only users without the `distributed` extra skip; CI installs it
pytestmark = pytest.mark.xdist_group("ray")  # (with `make test`'s two workers: the cluster tests share one)

from dsrecon.io.tables import write_table  # noqa: E402
from dsrecon.systems import simulate_system  # noqa: E402

TINY = ["--epochs", "2", "--batches-per-epoch", "2", "--batch-size", "4", "--hidden-dim", "8", "--sequence-length", "60",
        "--val-every", "1", "--checkpoint-every", "1", "--lyapunov-steps", "200"]
#: how long a node may take to register with the GCS (Ray's own default is shorter): a cold start
#: (nothing in the page cache, first imports) while the other xdist worker kept both cores busy
#: failed `ray start --head` with "The node registration may not be complete yet before the timeout"
START_WAIT_S = 120
ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", "OMP_NUM_THREADS": "1", "RAY_DISABLE_DOCKER_CPU_WARNING": "1",
       "RAY_raylet_start_wait_time_s": str(START_WAIT_S)}  # (for `ray start` and the embedded ray.init())
RAY_BIN = str(Path(sys.executable).with_name("ray"))


def _private_dir() -> str:
    # short: Ray puts unix sockets below it (at most 107 characters a path)
    return tempfile.mkdtemp(prefix="dsr-ray-", dir="/tmp" if os.path.isdir("/tmp") else None)


def ray_processes(temp_dir: str) -> list:
    """The processes of the Ray instance(s) rooted at ``temp_dir``: those whose command line names it
    (gcs_server, raylet, monitor, dashboard, log monitor) and all their descendants (the agents and
    workers a raylet starts, which rename themselves ray::…)."""
    import psutil

    found = {}
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(temp_dir in a for a in (p.info["cmdline"] or [])):
                found[p.pid] = p
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    for p in list(found.values()):
        try:
            found.update({c.pid: c for c in p.children(recursive=True)})
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    found.pop(os.getpid(), None)
    return list(found.values())


def stop_ray_processes(procs: list, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds, to exactly these processes (psutil.Process
    objects: one whose PID was reused by another process since is left alone)."""
    import psutil

    alive = [p for p in procs if p.is_running()]
    for p in alive:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(alive, timeout=grace)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=10)


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    """Per test: a private RAY_TMPDIR, so that the embedded `ray.init()` starts its own instance there
    (it would otherwise join the cluster named in /tmp/ray/ray_current_cluster); whatever of it
    survives the test is stopped, and only that."""
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("DSRECON_NO_RAY", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    tmp = _private_dir()
    monkeypatch.setenv("RAY_TMPDIR", tmp)
    yield
    if ray.is_initialized():
        ray.shutdown()
    stop_ray_processes(ray_processes(tmp))
    shutil.rmtree(tmp, ignore_errors=True)


def make_cohort(d: Path, n: int, frames: int = 300) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        out = simulate_system("lorenz63", frames, 0.02, 1.0, noise=0.01, seed=i)
        write_table(d / f"sub-{i + 1:02d}_bold.tsv", out["observed"], out["names"], sidecar={"RepetitionTime": 1.0})
    return d


def metrics(out: Path) -> dict:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(out.glob("sub-*/cohort_metrics.json"))}


def overlapping(ms: dict) -> bool:
    iv = sorted((m["started"], m["finished"]) for m in ms.values())
    return any(b[0] < a[1] for a, b in zip(iv, iv[1:]))


def test_embedded_ray_fits_subjects_in_parallel(cli, tmp_path):
    """The default: `ray.init()` starts Ray inside the command; two fits run side by side."""
    data = make_cohort(tmp_path / "data", 3)
    out = tmp_path / "out"
    r = cli("fit-cohort", data, "-o", out, *TINY, "--max-parallel", "2", "--json")
    assert r.code == 0, r.err
    res = json.loads(r.out)
    assert res["executor"] == "ray" and res["n_complete"] == 3 and res["versions"]["ray"] == ray.__version__
    ms = metrics(out)
    assert len(ms) == 3 and len({m["pid"] for m in ms.values()}) >= 2 and overlapping(ms)
    assert not ray.is_initialized()  # shut down again


_handed_out: set[int] = set()


def _free_ports(n: int) -> list[int]:
    """n distinct free ports, none handed out before in this module. The sockets stay bound until all n
    are picked: binding one at a time lets the kernel hand back a port just released, and Ray refuses
    a node whose two listeners share a port (CI saw the runtime-env agent and the dashboard agent's
    gRPC server both given 54509)."""
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket()
            socks.append(s)
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                ports.append(port)
    finally:
        for s in socks:
            s.close()
    return ports


def _free_port() -> int:
    return _free_ports(1)[0]


def _node_ports() -> list[str]:
    """Free ports for every listener of one node (the defaults, e.g. 8265 and 52365, may be a user's)."""
    opts = ("--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
            "--runtime-env-agent-port", "--metrics-export-port")
    return [f"{o}={p}" for o, p in zip(opts, _free_ports(len(opts)))]


#: the test's own wait for one `ray start` command (it returns once its node has registered)
START_TIMEOUT_S = START_WAIT_S + 60


class ClusterStartFailed(Exception):
    """`ray start` failed or timed out (the message says which node and why)."""


def _start_node(what: str, *args: str) -> None:
    try:
        r = subprocess.run([RAY_BIN, "start", *args], capture_output=True, text=True, timeout=START_TIMEOUT_S,
                           env={**os.environ, **ENV})
    except subprocess.TimeoutExpired:
        raise ClusterStartFailed(f"`ray start` of the {what} did not return within {START_TIMEOUT_S} s") from None
    if r.returncode != 0:
        tail = " | ".join(ln.strip() for ln in (r.stderr or r.stdout).strip().splitlines()[-3:])
        raise ClusterStartFailed(f"`ray start` of the {what} exited {r.returncode}: {tail}")


def _start_cluster(temp: str, started: list) -> str:
    """A head (1 CPU) and a worker node (1 CPU) on localhost below ``temp``, on ports free now;
    the processes found are appended to ``started`` as they appear. Returns the GCS address."""
    port = _free_port()
    addr = f"127.0.0.1:{port}"
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--num-gpus=0", "--disable-usage-stats", f"--temp-dir={temp}"]
    try:
        _start_node("head node", "--head", f"--port={port}", f"--dashboard-port={_free_port()}", "--include-dashboard=false",
                    *common, *_node_ports())
        started += ray_processes(temp)
        _start_node("worker node", f"--address={addr}", *common, *_node_ports())
    finally:
        started += ray_processes(temp)
    if not started:
        raise ClusterStartFailed(f"`ray start` succeeded but no process of the cluster in {temp} was found")
    return addr


def _stop_cluster(temp: str, started: list) -> list:
    """Terminate exactly the processes of the cluster below ``temp`` (those recorded at start, plus
    the workers its raylets started since); remove ``temp``. Returns any still running."""
    mine = {p.pid: p for p in started + ray_processes(temp)}
    stop_ray_processes(list(mine.values()))
    left = ray_processes(temp)
    shutil.rmtree(temp, ignore_errors=True)
    return left


@pytest.fixture(scope="module")
def cluster():
    """A head and a worker node on localhost, in a temporary directory of their own; yields the GCS
    address. A start that fails is stopped (its own processes only, by PID) and retried once, in a
    fresh directory with fresh ports. Stopped by terminating the processes this cluster started,
    never by `ray stop` (which stops every cluster on the machine).

    If both tries fail, the tests that need the cluster are skipped with the cause: `ray start`
    itself failed, before any dsrecon code ran, so this is the machine's problem (ports, memory,
    a start slower than START_WAIT_S), not a dsrecon failure. DSRECON_REQUIRE_RAY_CLUSTER=1
    makes it a failure instead (for a CI that must exercise the cluster)."""
    causes = []
    for attempt in (1, 2):
        temp = _private_dir()
        started: list = []
        try:
            addr = _start_cluster(temp, started)
        except ClusterStartFailed as e:
            causes.append(f"try {attempt}: {e}")
            left = _stop_cluster(temp, started)
            assert not left, f"Ray processes of the failed test cluster still running: {[p.pid for p in left]}"
            continue
        try:
            yield addr
        finally:
            left = _stop_cluster(temp, started)
            assert not left, f"Ray processes of the test cluster still running: {[p.pid for p in left]}"
        return
    msg = ("the local Ray test cluster could not be started on this machine, twice (an environment problem, not a dsrecon "
           "failure: `ray start` failed before any dsrecon code ran): " + "; ".join(causes))
    if os.environ.get("DSRECON_REQUIRE_RAY_CLUSTER"):
        pytest.fail(msg)
    pytest.skip(msg)


def test_a_failed_cluster_start_names_its_cause_and_leaves_no_process(monkeypatch):
    """What the fixture does with a start that fails (before its retry or its skip): the message
    names the node and `ray start`'s own error, and the try's processes and directory are gone."""
    monkeypatch.setattr(sys.modules[__name__], "_node_ports", lambda: ["--no-such-ray-option=1"])
    temp, started = _private_dir(), []
    with pytest.raises(ClusterStartFailed, match=r"`ray start` of the head node exited 2: .*no-such-ray-option"):
        _start_cluster(temp, started)
    assert _stop_cluster(temp, started) == [] and not os.path.exists(temp)


def test_stopping_the_test_cluster_leaves_other_ray_processes_alone(tmp_path):
    """stop_ray_processes ends the processes below its own directory only: a process naming another
    directory (a stand-in for a user's cluster) keeps running."""
    mine, other = _private_dir(), _private_dir()
    code = "import time; time.sleep(120)"
    procs = [subprocess.Popen([sys.executable, "-c", code, f"--session-dir={d}"]) for d in (mine, other)]
    try:
        found = ray_processes(mine)
        assert [p.pid for p in found] == [procs[0].pid]
        stop_ray_processes(found, grace=5)
        assert procs[0].wait(timeout=10) is not None
        assert procs[1].poll() is None  # the other "cluster" still runs
    finally:
        for p in procs:
            p.kill()
            p.wait()
        shutil.rmtree(mine, ignore_errors=True)
        shutil.rmtree(other, ignore_errors=True)


def test_cohort_on_a_local_cluster_by_address(cli, cluster, tmp_path):
    """6 subjects on a head + worker cluster: both nodes do fits, in parallel."""
    data = make_cohort(tmp_path / "data", 6)
    out = tmp_path / "out"
    r = cli("fit-cohort", data, "-o", out, *TINY, "--address", cluster, "--json")
    assert r.code == 0, r.err
    res = json.loads(r.out)
    assert (res["executor"], res["address"], res["n_complete"], res["n_failed"]) == ("ray", cluster, 6, 0)
    assert "2 CPU(s)" in r.err and "2 node(s)" in r.err
    ms = metrics(out)
    assert len(ms) == 6 and len({m["node"] for m in ms.values()}) == 2 and overlapping(ms)
    lines = (out / "summary.tsv").read_text().splitlines()
    assert len(lines) == 7 and all("\tcomplete\t" in ln for ln in lines[1:])


def test_killed_cohort_rerun_finishes_only_the_missing_subjects(cli, cluster, tmp_path):
    data = make_cohort(tmp_path / "data", 6)
    out = tmp_path / "out"
    args = ["fit-cohort", str(data), "-o", str(out), *TINY, "--epochs", "6", "--address", cluster, "--quiet"]
    proc = subprocess.Popen([sys.executable, "-c", "from dsrecon.cli.main import run; run()", *args], env={**os.environ, **ENV},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.time()
    while not metrics(out) and proc.poll() is None and time.time() - t0 < 180:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done = metrics(out)
    assert 1 <= len(done) < 6, f"killed with {len(done)} subjects done; stderr: {proc.stderr.read().decode()[-1000:]}"
    time.sleep(2.0)  # Ray cancels the dead driver's tasks
    stamps = {n: ((out / n / "model.safetensors").stat().st_mtime_ns, (out / n / "cohort_metrics.json").stat().st_mtime_ns)
              for n in done}
    r = cli(*args[:-1], "--json")
    assert r.code == 0, r.err
    res = json.loads(r.out)
    assert (res["n_skipped"], res["n_fitted_now"], res["n_complete"]) == (len(done), 6 - len(done), 6)
    assert f"{len(done)} subject(s) already finished" in r.err
    after = metrics(out)
    assert set(after) == {f"sub-{i:02d}" for i in range(1, 7)}
    assert {n: ((out / n / "model.safetensors").stat().st_mtime_ns, (out / n / "cohort_metrics.json").stat().st_mtime_ns)
            for n in done} == stamps
    assert all(after[n]["epochs_run"] == 6 for n in after)


def test_sweep_with_asha_on_the_cluster(cli, cluster, tmp_path):
    data = make_cohort(tmp_path / "data", 1)
    out = tmp_path / "sweep"
    r = cli("sweep", data / "sub-01_bold.tsv", "-o", out, "--grid", "latent_dim=3,4", "--seeds", "2", "--asha",
            *TINY[:10], "--epochs", "4", "--patience", "0", "--address", cluster, "--json")
    assert r.code == 0, r.err
    res = json.loads(r.out)  # stdout holds only the JSON object (Tune's tables go to stderr)
    assert res["executor"] == "ray-tune" and res["n_trials"] == 4 and res["n_failed"] == 0
    lines = (out / "results.tsv").read_text().splitlines()
    cols = lines[0].split("\t")
    rows = [dict(zip(cols, ln.split("\t"))) for ln in lines[1:]]
    assert sorted((r_["latent_dim"], r_["seed"]) for r_ in rows) == [("3", "0"), ("3", "1"), ("4", "0"), ("4", "1")]
    assert {r_["status"] for r_ in rows} <= {"complete", "stopped"} and res["n_complete"] >= 1
    best = json.loads((out / "best_config.json").read_text())
    assert best["params"]["latent_dim"] in (3, 4) and best["asha"] and best["versions"]["ray"] == ray.__version__
