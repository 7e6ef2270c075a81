"""Where sweep points run: a local process pool, Dask, or SLURM job arrays, behind one interface.

An executor has `run(fn, tasks, store)`, a generator that yields one Outcome per task as it
finishes (and None about once a second, a heartbeat for progress displays); `running`, the
tasks in flight now; `threads`, the torch threads each task should use (0 = leave as is);
`info()` for the manifest; and `close()`. Tasks carry a `.hash`; `fn(task) -> Outcome` is
idempotent (a stored point is not run again), so a task retried after a lost worker never
stores a point twice. Engines are imported only when used.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import torch
from threadpoolctl import threadpool_limits

from gradrank.errors import InputError
from gradrank.io import printable

HEARTBEAT = 1.0
EXECUTORS = ("local", "dask", "slurm")

# Every value that can reach a job script or a scheduler, with the grammar it must match. Values
# are checked when the config (or the command line) is read, before anything starts: a newline,
# a quote or a shell character can never leave its #SBATCH / #PBS line.
_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}"
_TIME = r"(\d{1,7}|(\d{1,3}-)?\d{1,3}:\d{2}(:\d{2})?)"
_MEM = r"\d{1,9}(\.\d{1,3})?([KMGTP]i?B?|[kmgtp]b?)?"  # no whitespace: it would split a #SBATCH line
SCHEDULER_OPTIONS = {
    "slurm": {
        "partition": ("str", rf"{_NAME}(,{_NAME}){{0,15}}"),
        "time": ("time", _TIME),
        "mem": ("str", _MEM),
        "array_parallelism": ("int", 1),
        "gpus": ("int", 0),
    },
    "dask": {
        "jobqueue": ("str", r"slurm|pbs"),
        "cores": ("int", 1),
        "memory": ("str", _MEM),
        "queue": ("str", _NAME),
        "walltime": ("str", r"(\d{1,3}-)?\d{1,3}:\d{2}:\d{2}"),
        "workers": ("int", 1),
        "start_timeout": ("int", 1),  # seconds to wait for a first worker (never reaches a job script)
    },
}
SCHEDULER_ADDRESS = r"(tcp|tls)://[A-Za-z0-9.-]{1,253}:\d{1,5}|(tcp|tls)://\[[0-9A-Fa-f:]{2,39}\]:\d{1,5}"


def check_scheduler_options(kind: str, table: dict, where: str) -> dict:
    """Validate the [sweep.slurm] or [sweep.dask] table (or the flags standing for it) against a
    strict grammar; the error names the key (`where` + name) and never echoes a control character."""

    rules = SCHEDULER_OPTIONS[kind]
    if not isinstance(table, dict):
        raise InputError(f"{where}: must be a table")
    for key, value in table.items():
        if key not in rules:
            raise InputError(f"unknown key '{where}.{_printable(key)}' (known: {', '.join(rules)})")
        kind_, rule = rules[key]
        if kind_ == "int":
            if isinstance(value, bool) or not isinstance(value, int) or not rule <= value < 2**31:
                raise InputError(f"{where}.{key} must be an integer >= {rule}, got {_printable(value)}")
            continue
        if kind_ == "time" and isinstance(value, int) and not isinstance(value, bool) and 0 < value < 10**7:
            continue
        if not isinstance(value, str) or not re.fullmatch(rule, value):
            raise InputError(
                f"{where}.{key}: {_printable(value)} is not a valid {key} "
                f"(letters, digits, '_', '.', '-' and the unit or time form only)"
            )
    return table


def check_scheduler_address(address: str, where: str = "--scheduler") -> str:
    if not isinstance(address, str) or not re.fullmatch(SCHEDULER_ADDRESS, address):
        raise InputError(f"{where}: {_printable(address)} is not a scheduler address tcp://HOST:PORT")
    return address


def _printable(value) -> str:
    """repr() keeps a hostile value on one line (newlines and controls escaped), truncated."""
    text = repr(value)
    return text[:60] + ("..." if len(text) > 60 else "")


class Unavailable(InputError):
    """The executor cannot start (no scheduler, no sbatch, a submission refused): nothing ran."""


def _need(*commands: str) -> None:
    for c in commands:
        if shutil.which(c) is None:
            raise Unavailable(f"--executor: '{c}' is not on PATH (no scheduler to submit to); nothing was started")


def _answers(cmd: list[str], what: str) -> None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unavailable(f"{what} does not answer ({exc.__class__.__name__}); nothing was started") from None
    if out.returncode != 0:
        why = " ".join((out.stderr or out.stdout).split())[:160]
        raise Unavailable(f"{what} does not answer ({_printable(why)}); nothing was started")


def _reachable(address: str, where: str = "--scheduler") -> None:
    """A TCP connection to tcp://HOST:PORT opens within 5 s."""

    host, _, port = address.split("://", 1)[1].rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise Unavailable(
            f"{where} {address}: cannot connect ({exc.strerror or exc.__class__.__name__}); nothing was started"
        ) from None


@contextlib.contextmanager
def isolated_children():
    """Every Python process started inside the block (the fork server, Dask's worker processes,
    submitit's jobs, which inherit the environment) runs with PYTHONSAFEPATH=1: its `-c`/`-m`
    start never puts the current directory on sys.path, so no file where the user runs gradrank
    (a json.py, a multiprocessing.py) is ever imported. The caller's environment is restored after."""
    before = os.environ.get("PYTHONSAFEPATH")
    os.environ["PYTHONSAFEPATH"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PYTHONSAFEPATH", None)
        else:
            os.environ["PYTHONSAFEPATH"] = before


@dataclass
class Outcome:
    """How one point ended: done, skipped (already stored) or failed (with the error text)."""

    hash: str
    status: str
    error: str = ""
    seconds: float = 0.0


# ---------------------------------------------------------------------------- local


def _alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie (a dead parent may wait a while to be reaped)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            return "\nState:\tZ" not in fh.read()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False


_limits = []


def limit_threads(threads: int) -> None:
    """Use `threads` threads in torch and in every BLAS/OpenMP library, those loaded already
    (threadpoolctl) and those loaded later (environment, e.g. scipy's own OpenBLAS): workers
    that run side by side must not each spin one thread per core."""

    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    torch.set_num_threads(threads)
    _limits.append(threadpool_limits(threads))


def _init_local_worker(threads: int, owner: int) -> None:
    """Limit threads; exit when the sweep process dies (no orphan keeps computing). The owner
    is watched, not the parent: forkserver workers are children of the fork server."""
    limit_threads(threads)

    def watch():
        while _alive(owner):
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


class LocalExecutor:
    """A bounded process pool: `jobs` workers (default: the number of cores), each with
    cores // jobs torch threads unless `threads` is given."""

    name = "local"

    def __init__(self, jobs: int | None = None, threads: int | None = None):
        cores = os.cpu_count() or 1
        self.jobs = jobs or cores
        self.threads = threads or max(1, cores // self.jobs)
        self.running = 0
        self._pool = None
        self._clean = True

    def info(self) -> dict:
        return {"name": self.name, "jobs": self.jobs, "threads": self.threads}

    def check(self) -> None:
        """Whether the executor can start (see Unavailable); nothing to check for a process pool."""

    def start(self):
        """Start the workers (from a fork server that imports torch once) and wait until they
        answer; run() calls it, callers may call it early to keep start-up out of a timing."""

        if self._pool is None:
            ctx = mp.get_context("forkserver")
            ctx.set_forkserver_preload(["gradrank.studies.analyze", "gradrank.results.runs", "gradrank.sweeps.store"])
            with isolated_children():
                self._pool = ProcessPoolExecutor(
                    self.jobs, mp_context=ctx, initializer=_init_local_worker, initargs=(self.threads, os.getpid())
                )
                for f in [self._pool.submit(os.getpid) for _ in range(self.jobs)]:
                    f.result()
        return self._pool

    def run(self, fn, tasks, store):
        self._clean = False
        pending, lost = list(tasks), {}
        while pending:
            pool = self.start()
            futures = {pool.submit(fn, t): t for t in pending}
            pending, not_done = [], set(futures)
            while not_done:
                done, not_done = wait(not_done, timeout=HEARTBEAT, return_when=FIRST_COMPLETED)
                self.running = min(self.jobs, len(not_done))
                if not done:
                    yield None
                for f in done:
                    task = futures[f]
                    try:
                        yield f.result()
                    except BrokenProcessPool:  # a worker died (OOM killer, signal): retry once in a new pool
                        stored = store.outcome(task.hash)
                        lost[task.hash] = lost.get(task.hash, 0) + 1
                        if stored is not None:
                            yield stored
                        elif lost[task.hash] < 2:
                            pending.append(task)
                        else:
                            yield Outcome(task.hash, "failed", "worker process died twice running this point")
            self._pool.shutdown(wait=True)
            self._pool = None
        self.running = 0
        self._clean = True

    def close(self) -> None:
        """Stop the workers now if the sweep was interrupted."""
        if self._pool is None:
            return
        if not self._clean:
            procs = list((self._pool._processes or {}).values())  # no public way to stop running tasks
            self._pool.shutdown(wait=False, cancel_futures=True)
            for p in procs:
                p.terminate()
        else:
            self._pool.shutdown(wait=True)
        self._pool = None


# ---------------------------------------------------------------------------- dask


def jobqueue_class_and_options(spec: dict, log_dir=None) -> tuple[type, dict]:
    """The dask-jobqueue cluster class and its options from a [sweep.dask] table (jobqueue = slurm | pbs)."""
    import dask_jobqueue

    check_scheduler_options("dask", spec, "sweep.dask")
    cls = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}[spec.get("jobqueue", "slurm")]
    return cls, {
        "cores": spec.get("cores", 1),
        "processes": 1,
        "memory": spec.get("memory", "4GB"),
        "queue": spec.get("queue"),
        "walltime": spec.get("walltime", "01:00:00"),
        "log_directory": None if log_dir is None else str(log_dir),
    }


def jobqueue_cluster(spec: dict, jobs: int, log_dir=None):
    """A dask-jobqueue cluster from the [sweep.dask] table; the worker jobs' logs go to log_dir
    (default: the current directory)."""
    cls, options = jobqueue_class_and_options(spec, log_dir)
    cluster = cls(**options)
    cluster.scale(spec.get("workers", jobs))
    return cluster


class DaskExecutor:
    """Dask: a LocalCluster of `jobs` single-threaded worker processes by default, an existing
    scheduler (`scheduler = "tcp://host:port"`), or a dask-jobqueue cluster (`jobqueue` table).
    A task whose worker dies is rescheduled by Dask on another worker."""

    name = "dask"

    def __init__(self, jobs: int | None = None, scheduler: str | None = None, jobqueue: dict | None = None, log_dir=None):
        self.jobs = jobs or os.cpu_count() or 1
        self.log_dir = log_dir
        self.scheduler = scheduler
        self.jobqueue = jobqueue or None
        self.threads = 0 if scheduler else 1
        self.running = 0
        self._client = self._cluster = None
        self._futures: list = []

    def info(self) -> dict:
        return {"name": self.name, "jobs": self.jobs, "scheduler": self.scheduler, "jobqueue": self.jobqueue}

    def check(self) -> None:
        """The scheduler answers, or the batch system the jobqueue submits to is there."""
        if self.scheduler:
            _reachable(self.scheduler)
        elif self.jobqueue:
            kind = self.jobqueue.get("jobqueue", "slurm")
            _need(*({"slurm": ("sbatch", "squeue"), "pbs": ("qsub", "qstat")}[kind]))
            if kind == "slurm":
                _answers(["squeue", "-h", "-o", "%i", "-u", str(os.getuid())], "the SLURM controller (squeue)")

    def _connect(self):
        from distributed import Client, LocalCluster

        if self.scheduler:
            try:
                return Client(self.scheduler, timeout="10s")
            except (OSError, TimeoutError) as exc:
                raise Unavailable(f"--scheduler {self.scheduler}: cannot connect ({exc.__class__.__name__})") from None
        if self.jobqueue:
            self._cluster = jobqueue_cluster(self.jobqueue, self.jobs, self.log_dir)
        else:
            self._cluster = LocalCluster(n_workers=self.jobs, threads_per_worker=1, processes=True, dashboard_address=None)
        return Client(self._cluster)

    def run(self, fn, tasks, store):
        from distributed import as_completed

        with isolated_children():
            self._client = self._connect()
        token = uuid.uuid4().hex[:8]
        self._futures = [self._client.submit(fn, t, key=f"gradrank-point-{t.hash}-{token}", pure=False) for t in tasks]
        by_key = {f.key: t for f, t in zip(self._futures, tasks)}
        finished: queue.Queue = queue.Queue()

        def collect():
            for f in as_completed(self._futures):
                finished.put(f)

        threading.Thread(target=collect, daemon=True).start()
        left, slots = len(tasks), max(1, sum(self._client.nthreads().values()))
        t0, started = time.monotonic(), bool(self._client.nthreads())
        wait_s = (self.jobqueue or {}).get("start_timeout", START_TIMEOUT_S)
        while left:
            self.running = min(slots, left)
            try:
                f = finished.get(timeout=HEARTBEAT)
            except queue.Empty:
                workers = self._client.nthreads()
                started = started or bool(workers)
                slots = max(1, sum(workers.values()))  # workers come and go
                if self.jobqueue and not started and time.monotonic() - t0 > wait_s:
                    why = f"dask-jobqueue: no worker job started within {wait_s} s (see the job logs in {self.log_dir})"
                    for fut in self._futures:
                        if not fut.done():
                            yield Outcome(by_key[fut.key].hash, "failed", why)
                    break
                yield None
                continue
            left -= 1
            try:
                yield f.result()
            except Exception as exc:  # noqa: BLE001 - e.g. KilledWorker after repeated worker deaths
                yield Outcome(by_key[f.key].hash, "failed", f"dask: {exc.__class__.__name__}: {exc}")
        self.running = 0
        self._futures = []

    def close(self) -> None:
        if self._client is not None:
            if self._futures:
                self._client.cancel(self._futures)
            self._client.close()
        if self._cluster is not None:
            try:
                self._cluster.close()
            except Exception:  # noqa: BLE001 - dask's close asserts on worker jobs that never started
                pass
        self._client = self._cluster = None


# ---------------------------------------------------------------------------- slurm

START_TIMEOUT_S = 600  # a jobqueue cluster none of whose worker jobs starts in this time has failed
LOST_AFTER_S = 30.0  # a task neither queued nor in the accounting for this long is lost
ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "RESIZING", "SUSPENDED", "CONFIGURING", "COMPLETING", "REQUEUE_HOLD"}


def _run(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def slurm_states(tasks: list[str]) -> dict[str, str]:
    """State of each array task ("123_4" -> "RUNNING"). squeue -t all knows queued, running and
    recently ended tasks; sacct (accounting) older ones. A task that neither knows while squeue
    still answers for its array was cancelled while pending: "GONE". Absent when unreachable."""
    jobs = sorted({t.split("_")[0] for t in tasks})
    if not jobs:
        return {}
    states: dict[str, str] = {}
    for line in (_run(["sacct", "-n", "-P", "-X", "-j", ",".join(jobs), "-o", "JobID,State"]) or "").splitlines():
        task, _, state = line.partition("|")
        if "[" not in task and state:
            states[task.strip()] = state.split()[0]
    answered = set()
    for job in jobs:  # one call each: squeue fails for a job it no longer knows
        out = _run(["squeue", "-h", "-r", "-t", "all", "-j", job, "-o", "%i|%T"])
        if out:
            answered.add(job)
        for line in (out or "").splitlines():
            task, _, state = line.partition("|")
            if state:
                states[task.strip()] = state.strip()
    return {
        t: states.get(t, "GONE" if t.split("_")[0] in answered else None)
        for t in tasks
        if t in states or t.split("_")[0] in answered
    }


def _minutes(text: str | int) -> int:
    """A time limit in minutes, from minutes or [D-]HH:MM:SS."""
    s = str(text).strip()
    try:
        if ":" not in s:
            return int(s)
        days, _, hms = s.rpartition("-")
        h, mnt, *sec = (int(x) for x in hms.split(":"))
        return int(days or 0) * 1440 + h * 60 + mnt + (1 if sec and sec[0] else 0)
    except ValueError:
        raise InputError(f"--time must be minutes or HH:MM:SS, got {text!r}") from None


class SlurmExecutor:
    """SLURM job arrays through submitit. The job ids go into the manifest as soon as the array
    is submitted; completion is read from the store and from squeue/sacct, never by blocking on
    a job's result, so a task killed before writing anything (scancel, time limit) is reported
    failed. Points still queued or running from an earlier submission are followed, not resubmitted."""

    name = "slurm"

    def __init__(
        self,
        folder,
        partition: str | None = None,
        time_limit: str | int = 60,
        mem: str | None = None,
        array_parallelism: int | None = None,
        gpus: int = 0,
        poll: float = 1.0,
    ):
        self.folder = str(folder)
        self.partition, self.mem, self.gpus = partition, mem, gpus
        self.timeout_min = _minutes(time_limit)
        self.array_parallelism = array_parallelism
        self.poll = poll
        self.threads = 1
        self.running = 0

    def info(self) -> dict:
        return {
            "name": self.name,
            "partition": self.partition,
            "timeout_min": self.timeout_min,
            "mem": self.mem,
            "array_parallelism": self.array_parallelism,
            "gpus": self.gpus,
            "folder": self.folder,
        }

    def _parameters(self) -> dict:
        p = {"timeout_min": self.timeout_min, "cpus_per_task": self.threads, "name": "gradrank-sweep"}
        if self.partition:
            p["slurm_partition"] = self.partition
        if self.mem:
            p["slurm_mem"] = self.mem
        if self.array_parallelism:
            p["slurm_array_parallelism"] = self.array_parallelism
        if self.gpus:
            p["gpus_per_node"] = self.gpus
        return p

    def check(self) -> None:
        """sbatch, squeue and sacct are there and the controller answers."""
        _need("sbatch", "squeue", "sacct")
        _answers(["squeue", "-h", "-o", "%i", "-u", str(os.getuid())], "the SLURM controller (squeue)")

    def _submit(self, fn, tasks, store) -> dict[str, str]:
        import submitit

        ex = submitit.AutoExecutor(folder=self.folder, cluster="slurm")
        ex.update_parameters(**self._parameters())
        with isolated_children(), _captured_stderr() as said:  # sbatch's own complaint goes into the one error line
            try:
                jobs = ex.map_array(fn, tasks)  # ids "123_4"; a single task is a plain job "123"
            except Exception as exc:  # noqa: BLE001 - sbatch refused the array (bad partition, limits)
                failure = exc
            else:
                failure = None
        if failure is not None:
            why = " ".join((said() or str(failure)).split())
            raise Unavailable(f"slurm: sbatch refused the job array ({printable(why[:200])}); nothing was started")
        ids = [j.job_id for j in jobs]
        store.add_slurm_job(ids[0].split("_")[0], [t.hash for t in tasks], ids)
        return {t.hash: i for t, i in zip(tasks, ids)}

    def run(self, fn, tasks, store):
        earlier = latest_slurm_tasks(store.manifest())
        states = slurm_states(list(earlier.values()))
        watch = {t.hash: earlier[t.hash] for t in tasks if states.get(earlier.get(t.hash, "")) in ACTIVE}
        submit = [t for t in tasks if t.hash not in watch]
        if submit:
            watch |= self._submit(fn, submit, store)
        gone: dict[str, int] = {}
        while watch:
            states = slurm_states(list(watch.values()))
            self.running = sum(1 for tid in watch.values() if states.get(tid) == "RUNNING")
            for h, tid in list(watch.items()):
                stored = store.outcome(h)
                state = states.get(tid)
                if stored is None and state not in ACTIVE:  # ended without a result, or not visible yet
                    gone[h] = gone.get(h, 0) + 1
                    if (state and state != "COMPLETED") or gone[h] * self.poll >= LOST_AFTER_S:
                        why = {"GONE": "was cancelled before it started", None: "left the queue"}.get(state, f"ended {state}")
                        stored = Outcome(h, "failed", f"slurm task {tid} {why} without a result")
                if stored is not None:
                    del watch[h]
                    self.running -= state == "RUNNING"
                    yield stored
            if watch:
                yield None
                time.sleep(self.poll)
        self.running = 0

    def close(self) -> None:
        """Nothing to stop: the array keeps running and a rerun follows it."""


@contextlib.contextmanager
def _captured_stderr():
    """File descriptor 2 (where sbatch, run by submitit, writes) into a temporary file; yields a
    function returning what was written."""

    text: list[str] = []
    with tempfile.TemporaryFile() as tmp:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield lambda: "".join(text)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text.append(tmp.read().decode("utf-8", "replace"))


def latest_slurm_tasks(manifest: dict) -> dict[str, str]:
    """point hash -> its array task in the latest submission that included it."""
    out = {}
    for job in manifest.get("slurm_jobs", []):
        out |= dict(zip(job["points"], job["tasks"]))
    return out


def make(
    name: str, root, *, jobs: int | None = None, scheduler: str | None = None, slurm: dict | None = None, dask: dict | None = None
):
    """The executor named on the command line for the sweep in directory root, options from
    flags or the [sweep] table; engine files go to root/slurm (submitit) or root/dask (jobqueue logs)."""
    if name not in EXECUTORS:
        raise InputError(f"--executor must be one of {', '.join(EXECUTORS)}; got {name!r}")
    if jobs is not None and jobs < 1:
        raise InputError(f"--jobs must be >= 1, got {jobs}")
    check_scheduler_options("slurm", slurm or {}, "sweep.slurm")
    check_scheduler_options("dask", dask or {}, "sweep.dask")
    if scheduler is not None:
        check_scheduler_address(scheduler)
    if name == "local":
        return LocalExecutor(jobs)
    if name == "dask":
        return DaskExecutor(jobs, scheduler, dask, Path(root) / "dask")
    s = slurm or {}
    return SlurmExecutor(
        Path(root) / "slurm", s.get("partition"), s.get("time", 60), s.get("mem"), s.get("array_parallelism"), s.get("gpus", 0)
    )
