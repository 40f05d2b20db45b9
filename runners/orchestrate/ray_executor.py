"""The `ray` executor: one Ray task per pending run, on the CPUs or GPUs Ray assigns (Ray sets
CUDA_VISIBLE_DEVICES for a task that reserves GPUs, and OMP_NUM_THREADS to its CPUs). Runs are independent, so a
grid of small runs keeps every device busy, where data-parallelising each small run over all devices would not.

- Pretrain stages: one Ray task per stage, submitted first; the runs that use a stage take its ObjectRef as an
  argument, so Ray starts them only once the stage is built. What travels is the stage's checkpoint *path* in the
  transferbench cache (TRANSFERBENCH_CACHE): on a cluster that folder must be on a filesystem every node sees.
- One writer: workers return their record; the driver alone appends it to the store (same run_id resume, same
  schema; the record's env says which host, Ray node and GPUs ran it).
- A worker process that dies (killed, out of host memory, node lost) is retried once by Ray (max_retries=1); a
  second death becomes a `failed` row naming the cause, and the suite goes on.
- Ctrl-C / SIGTERM on the driver cancels the outstanding tasks, records nothing half-done (exit 130/143); the next
  invocation runs what is missing, each run exactly once (the driver holds each submitted run's claim).
"""
from __future__ import annotations

import dataclasses
import os
import socket
import time
from pathlib import Path
from typing import Optional, Sequence

from transferbench.errors import UserError

from ..signals import check_stop
from .executor import Executor, train_one

RETRIES = 1  # Ray re-executes a task once when its worker process dies; a second death is a failed row
# What a worker needs from the driver's environment on a cluster (a local instance inherits it anyway).
PASS_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HOME", "TRANSFERBENCH_CACHE",
            "TRANSFORMERS_NO_ADVISORY_WARNINGS", "PYTHONPATH", "YOLO_CONFIG_DIR")
CONNECT_TIMEOUT_S = 5.0  # an unreachable --address is reported within this, not after Ray's long retries
# ray.init itself: a local instance starts in ~6 s here (minutes on a loaded machine are still a start); past this
# it is reported in one line instead of waiting for ever
INIT_TIMEOUT_S = 300.0


@dataclasses.dataclass(frozen=True)
class RayOptions:
    """`--executor ray` options. `jobs`: start a local instance with that many run slots; `address`: join a
    running cluster ('auto', or HOST:PORT of its head); neither: a local instance over every CPU/GPU here."""
    address: Optional[str] = None
    jobs: Optional[int] = None
    gpus_per_run: Optional[float] = None  # default: 1 where the instance has GPUs
    cpus_per_run: float = 1.0

    def check(self) -> None:
        """Bad options, in one line each, before Ray starts or anything trains."""
        if self.jobs is not None and self.jobs < 1:
            raise UserError(f"--jobs must be >= 1 (got {self.jobs}): how many runs train at once")
        if self.jobs is not None and self.address is not None:
            raise UserError("--jobs starts a local Ray instance and --address joins a running one; give one of them")
        if not self.cpus_per_run > 0:
            raise UserError(f"--cpus-per-run must be > 0 (got {self.cpus_per_run})")
        if self.gpus_per_run is not None and not self.gpus_per_run >= 0:
            raise UserError(f"--gpus-per-run must be >= 0 (got {self.gpus_per_run})")
        for flag, value in (("--cpus-per-run", self.cpus_per_run), ("--gpus-per-run", self.gpus_per_run)):
            if value is not None and value > 1 and not float(value).is_integer():  # Ray's own rule
                raise UserError(f"{flag} {value:g}: Ray reserves whole numbers of devices above 1 (a fraction only "
                                f"below 1); give {int(value)} or {int(value) + 1}")


def import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install 'transferbench[ray]' (or pip install ray)") from None
    return ray


# HTTP/2's client preface and an empty SETTINGS frame: a gRPC server (Ray's GCS) answers with its own SETTINGS frame
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
H2_SETTINGS = 4


def _host_port(address: str, flag: str = "--address") -> tuple[str, int]:
    """(host, port) of HOST:PORT, an IPv6 host in brackets ([::1]:6379) unbracketed."""
    host, _, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"{flag} {address}: give 'auto' or HOST:PORT of the Ray head (ray start --head prints it)")
    return host, int(port)


def _reachable(address: str, flag: str = "--address") -> None:
    """HOST:PORT must accept a TCP connection and answer as a gRPC server does (Ray's GCS speaks gRPC), each within
    CONNECT_TIMEOUT_S: a port that is not Ray's would otherwise make ray.init retry for minutes."""
    host, port = _host_port(address, flag)
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S) as conn:
            conn.settimeout(CONNECT_TIMEOUT_S)
            conn.sendall(H2_PREFACE)
            frame = b""
            while len(frame) < 9:
                chunk = conn.recv(9 - len(frame))
                if not chunk:
                    break
                frame += chunk
    except socket.timeout:
        frame = b""
    except OSError as err:
        raise UserError(f"{flag} {address}: no Ray head answers there ({err.strerror or err}); start one with "
                        f"`ray start --head` or check the address") from None
    if len(frame) < 9 or frame[3] != H2_SETTINGS:
        raise UserError(f"{flag} {address}: something listens there but it is not a Ray head (no gRPC answer within "
                        f"{CONNECT_TIMEOUT_S:g} s); give the head's GCS address (`ray start --head` prints it)")


def check_early(options: RayOptions) -> None:
    """Everything about the options that can be found before the suite is checked or Ray starts."""
    options.check()
    import_ray()
    env = os.environ.get("RAY_ADDRESS")
    if env and options.jobs is not None:  # ray.init would join that cluster, and refuse --jobs' CPU count
        raise UserError(f"RAY_ADDRESS={env} is set, and --jobs starts a local Ray instance: unset RAY_ADDRESS for "
                        f"a local one, or join that cluster with --address {env}")
    if options.address not in (None, "auto"):
        _reachable(options.address)
    elif options.address is None and env and env not in ("auto", "local"):
        _reachable(env, "RAY_ADDRESS")
    if options.address is None and not env:
        here = os.cpu_count() or 1
        if options.cpus_per_run > here:  # a local instance could never start such a run (nor start at all)
            raise UserError(f"--cpus-per-run {options.cpus_per_run:g}: this machine has {here} CPUs, so no run "
                            f"could start; give at most {here}")
    if options.address is None and options.gpus_per_run:
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"--gpus-per-run {options.gpus_per_run:g}: this machine has no GPUs; drop the flag to "
                            "run on CPUs")
    _at_most_one_gpu(options.gpus_per_run)


def _at_most_one_gpu(gpus: Optional[float]) -> None:
    """K > 1 would need Ray Train around the Accelerate loop: refused until that path exists and is tested."""
    if gpus is not None and gpus > 1:
        raise UserError(f"--gpus-per-run {gpus:g}: multi-GPU runs inside Ray are not supported yet; use "
                        "--gpus-per-run 1 (one run per GPU), or `accelerate launch` for data-parallel runs")


def connect(options: RayOptions, runs: int = 1) -> tuple[object, bool]:
    """Ray, initialised for this driver: (the ray module, whether this call started the instance)."""
    ray = import_ray()
    if ray.is_initialized():
        return ray, False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no network at run time; no usage report either
    common = dict(include_dashboard=False, log_to_driver=True, configure_logging=False)
    address = options.address
    if address is None and os.environ.get("RAY_ADDRESS"):  # Ray's own convention: join the cluster it names
        address = os.environ["RAY_ADDRESS"]
    if address is None:  # a local instance: its workers inherit this process's environment
        import torch

        # one slot per run at most: --jobs beyond the pending runs reserves nothing that could be used
        cpus = min(options.jobs, max(runs, 1)) * options.cpus_per_run if options.jobs else None
        kwargs = dict(num_cpus=cpus, num_gpus=torch.cuda.device_count(), _node_ip_address="127.0.0.1",
                      object_store_memory=200 * 1024**2, **common)
    else:
        env_vars = {k: os.environ[k] for k in PASS_ENV if k in os.environ}
        kwargs = dict(address=address, runtime_env={"env_vars": env_vars} if env_vars else None, **common)
    _bounded(ray.init, kwargs, f"--address {address}" if address else "a local Ray instance")
    return ray, True


class _InitTimeout(Exception):
    pass


def _bounded(init, kwargs: dict, what: str) -> None:
    """ray.init(**kwargs) within INIT_TIMEOUT_S, its failures as one line. ray.init installs signal handlers, so it
    must run in the main thread: there a SIGALRM timer interrupts it (elsewhere, an API caller's thread, it runs
    unbounded)."""
    import signal
    import threading

    main = threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")
    if main:
        def expire(signum, frame):
            raise _InitTimeout

        previous = signal.signal(signal.SIGALRM, expire)
        signal.setitimer(signal.ITIMER_REAL, INIT_TIMEOUT_S)
    try:
        init(**kwargs)
    except _InitTimeout:
        raise UserError(f"{what}: Ray did not start within {INIT_TIMEOUT_S:g} s; check `ray status` (for a "
                        f"cluster: the address and its firewall), or run without --jobs / --executor ray") from None
    except (ConnectionError, ValueError, RuntimeError, TimeoutError) as err:  # 'auto' with none running...
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise UserError(f"{what}: {first}") from None
    finally:
        if main:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


def resources(ray, options: RayOptions) -> dict:
    """What each run reserves: K GPUs where the instance has GPUs (default 1), else C CPUs."""
    gpus_here = ray.cluster_resources().get("GPU", 0)
    gpus = options.gpus_per_run
    if gpus and not gpus_here:
        raise UserError(f"--gpus-per-run {gpus:g}: the Ray instance has no GPUs; drop the flag to run on CPUs")
    _at_most_one_gpu(gpus)
    if gpus is None:
        gpus = 1 if gpus_here else 0
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if not any(n.get("CPU", 0) >= options.cpus_per_run and n.get("GPU", 0) >= gpus for n in nodes):
        biggest = max(nodes, key=lambda n: (n.get("GPU", 0), n.get("CPU", 0)), default={})
        raise UserError(f"no node of the Ray instance has {options.cpus_per_run:g} CPU and {gpus:g} GPU for a run "
                        f"(the largest: {biggest.get('CPU', 0):g} CPU, {biggest.get('GPU', 0):g} GPU): lower "
                        f"--cpus-per-run / --gpus-per-run")
    return {"num_gpus": gpus, "num_cpus": options.cpus_per_run, "max_retries": RETRIES}


# --- worker side -------------------------------------------------------------------------------------------

_warmed: set = set()


def _prepare(imports: tuple[str, ...], trust: tuple[str, ...], plan) -> None:
    """Once per worker process: the suite's task modules and trust list, and the runs' one-time imports (so they
    land outside the run's timed fields, as in the local executor)."""
    from .plan import prepare
    from .preflight import warm_up

    prepare(imports, trust)
    key = (plan.spec.task, str(plan.spec.task_args), plan.spec.mode, plan.spec.model)
    if key not in _warmed:
        _warmed.add(key)
        warm_up([plan])


def _where(ray) -> dict:
    """Which worker ran a run: host, Ray node, process and the GPUs Ray assigned it."""
    ctx = ray.get_runtime_context()
    return {"name": "ray", "host": socket.gethostname(), "node_id": ctx.get_node_id(), "pid": os.getpid(),
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()]}


def train_stage(stage, rebuild: bool, imports: tuple, trust: tuple):
    """A pretrain stage's checkpoint folder, or the StageFailed that its runs then report."""
    from .stages import StageFailed, ensure_stage

    _prepare(imports, trust, stage)
    try:
        return ensure_stage(stage, rebuild)
    except StageFailed as err:
        return err


def train_run(plan, stage, work_dir: str, imports: tuple, trust: tuple):
    """One run on a worker: the same execute() as the local executor; returns its record."""
    import ray

    _prepare(imports, trust, plan)
    return train_one(plan, stage, Path(work_dir), env={"executor": _where(ray)})


# --- driver side -------------------------------------------------------------------------------------------

class RayExecutor(Executor):
    """One Ray task per run (and per pretrain stage, which its runs wait for); the driver records."""

    name, where = "ray", "Ray"

    def __init__(self, options: RayOptions, results_dir: Path, rebuild_stages: bool, imports: Sequence[str],
                 trust: Sequence[str], log=print) -> None:
        super().__init__()
        self.options, self.results_dir, self.rebuild_stages = options, results_dir, rebuild_stages
        self.imports, self.trust, self.log = tuple(imports), tuple(trust), log
        self.ray = self.started = None
        self.stages: dict[str, object] = {}  # stage name -> ObjectRef
        self.running: dict[object, object] = {}  # run ObjectRef -> plan

    def start(self, plans) -> None:
        from .execute import process_state

        if process_state().num_processes > 1:
            raise UserError("--executor ray schedules whole runs on Ray's devices; start it with `transferbench "
                            "run`, not under `accelerate launch` with several processes")
        t0 = time.perf_counter()
        self.ray, self.started = connect(self.options, len(plans))  # workers warm up themselves
        try:
            self.need = resources(self.ray, self.options)
        except UserError:
            self.close()
            raise
        self.stage_task = self.ray.remote(train_stage).options(**self.need)
        self.run_task = self.ray.remote(train_run).options(**self.need)
        self.times = {"ray_start_seconds": time.perf_counter() - t0, "stages_seconds": 0.0}  # stages: Ray tasks
        cluster = self.ray.cluster_resources()
        self.log(f"ray: {self.need['num_gpus']:g} GPU / {self.need['num_cpus']:g} CPU per run, on "
                 f"{cluster.get('CPU', 0):g} CPUs and {cluster.get('GPU', 0):g} GPUs")

    def submit(self, plan) -> None:
        stage = None
        if plan.stage is not None:
            name = plan.stage.spec.stage_name
            if name not in self.stages:
                self.stages[name] = self.stage_task.remote(plan.stage, self.rebuild_stages, self.imports, self.trust)
            stage = self.stages[name]
        work = str((self.results_dir / "work" / plan.run_id).resolve())
        self.running[self.run_task.remote(plan, stage, work, self.imports, self.trust)] = plan

    def finished(self, wait: bool):
        from .execute import failed_result

        while self.running:
            done, _ = self.ray.wait(list(self.running), num_returns=1, timeout=0.5 if wait else 0)
            check_stop()
            if not done and not wait:
                return
            for ref in done:
                plan = self.running.pop(ref)
                try:
                    res = self.ray.get(ref)
                except self.ray.exceptions.RayError as err:  # the worker died twice, or its node was lost
                    res = failed_result(plan, f"ray worker died: {type(err).__name__}: {_cause(err)}")
                yield plan, res

    def cancel(self) -> None:
        """Nothing keeps training for a driver that stopped listening."""
        for ref in [*self.running, *self.stages.values()]:
            self.ray.cancel(ref, force=True)
        self.running.clear()

    def close(self) -> None:
        if self.started:  # a cluster joined with --address keeps running
            self.ray.shutdown()


def _cause(err) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return (lines[0] if lines else "no message")[:300]
