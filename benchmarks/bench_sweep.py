"""Sweep throughput and engine overhead, each beside the obvious implementation, same run.

1. Local pool: a 16-point grid of paper-size analyses (n=750, d=1000, m=1250; 4 values of
   data.nu x 4 seeds). The obvious implementation is a serial loop in this process calling
   analysis.analyze + outputs.write_run; ours is `gradrank sweep`'s LocalExecutor with 1 and
   with 2 workers. Every case uses 1 torch and 1 BLAS thread per worker, so
   the ratio measures process parallelism, not BLAS threads. Reported twice: including the
   workers' start-up (the fork server, which imports torch once per process, is started
   before and timed separately) and with the workers started beforehand (LocalExecutor.start),
   i.e. the sustained throughput of a long sweep.
2. Dask: per-point overhead of the Dask path over a direct call, on tiny points (n=d=m=16),
   with a LocalCluster of 1 single-threaded worker started (and warmed) beforehand:
   (Dask wall time - direct wall time) / points.

Run: python benchmarks/bench_sweep.py [--points 16] [--tiny 60]   (0 skips a part)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from gradrank.sweeps import spec as sweep
from gradrank.sweeps import store as sweeps
from gradrank.sweeps.executors import DaskExecutor, LocalExecutor, limit_threads


def grid(sets, nus, seeds):
    base, spec = sweep.load(None, sets, grid=[f"data.nu={','.join(map(str, nus))}"], seeds=seeds)
    return base, spec, sweep.points(base, spec)


def direct(root: Path, base, spec, pts) -> float:
    """The obvious implementation: a serial loop over run_point in this process."""
    store = sweeps.open_store(root, base, spec, pts, {"name": "direct"})
    t = time.perf_counter()
    for p in pts:
        out = sweeps.run_point(sweep.PointTask(str(store.root), p.hash, p.config.to_dict(), "analyze"))
        assert out.status == "done", out.error
    return time.perf_counter() - t


def through(root: Path, base, spec, pts, executor, warm: bool = False) -> tuple[float, float]:
    """(wall seconds, mean seconds inside a point) of a sweep; warm: workers started beforehand."""
    store = sweeps.open_store(root, base, spec, pts, executor.info())
    if warm:
        executor.start()
    inside = []
    t = time.perf_counter()
    failed = sweep.run(
        store, pts, "analyze", executor, sweeps.run_point, lambda p: p.outcome and inside.append(p.outcome.seconds)
    )
    assert not failed
    return time.perf_counter() - t, sum(inside) / max(1, len(inside))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=16, help="paper-size points (4 nu values x points/4 seeds)")
    ap.add_argument("--tiny", type=int, default=60, help="tiny points for the Dask overhead (0: skip)")
    args = ap.parse_args()
    limit_threads(1)  # this process too: the serial loop and direct calls use 1 thread as well
    tmp = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    if args.points:
        local_pool(tmp, args.points)
    if args.tiny:
        dask_overhead(tmp, args.tiny)
    print(f"(stores under {tmp})")


def local_pool(tmp: Path, points: int) -> None:
    base, spec, pts = grid([], [0.1, 0.25, 0.4, 0.6], max(1, points // 4))
    n = len(pts)
    t_direct = direct(tmp / "direct", base, spec, pts)
    print(f"local pool, {n} paper-size points, 1 torch/BLAS thread per worker:")
    print(f"  serial loop in-process (obvious)  {t_direct:7.2f} s  {n / t_direct:6.3f} points/s")
    t = time.perf_counter()
    LocalExecutor(1, 1).start()  # the fork server (imports torch) lives on: start it once, untimed below
    print(f"  fork server start-up (once per process)  {time.perf_counter() - t:7.2f} s")
    walls = {}
    for warm in (False, True):
        for jobs in (1, 2):
            wall, inside = through(tmp / f"local{jobs}{'w' * warm}", base, spec, pts, LocalExecutor(jobs, 1), warm)
            walls[warm, jobs] = wall
            print(
                f"  gradrank sweep, {jobs} worker(s), {'workers started beforehand' if warm else 'including worker start '}"
                f"  {wall:7.2f} s  {n / wall:6.3f} points/s  ({inside:.2f} s inside a point)"
            )
    for warm, what in ((False, "end to end"), (True, "workers running")):
        print(f"  throughput ratio 2 workers / 1 worker, {what}: {walls[warm, 1] / walls[warm, 2]:5.2f}x (target >= 1.8x)")


def dask_overhead(tmp: Path, points: int) -> None:
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        print("dask: distributed is not installed, overhead not measured")
        return
    sets = ["data.n=16", "data.d=16", "model.width=16", "analysis.top_k=4"]
    nus = [round(0.01 * i, 2) for i in range(points)]
    base, spec, tiny = grid(sets, nus, 0)
    warm_base, warm_spec, warm = grid(sets, [0.999], 0)
    direct(tmp / "tiny-warm", warm_base, warm_spec, warm)
    t_direct = direct(tmp / "tiny-direct", base, spec, tiny)
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        client.run(limit_threads, 1)
        through(tmp / "tiny-dask-warm", warm_base, warm_spec, warm, DaskExecutor(scheduler=cluster.scheduler_address))
        t_dask = through(tmp / "tiny-dask", base, spec, tiny, DaskExecutor(scheduler=cluster.scheduler_address))[0]
    per_direct, per_dask = t_direct / len(tiny), t_dask / len(tiny)
    print(f"dask, {len(tiny)} tiny points, 1 single-threaded worker:")
    print(f"  direct call (obvious)  {1e3 * per_direct:7.2f} ms/point")
    print(f"  dask path              {1e3 * per_dask:7.2f} ms/point  ({per_dask / per_direct:4.2f}x)")
    print(f"  overhead per point     {1e3 * (per_dask - per_direct):7.2f} ms (target < 50 ms)")


if __name__ == "__main__":
    main()
