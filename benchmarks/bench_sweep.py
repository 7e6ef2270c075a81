"""Sweep throughput and engine overhead, each beside the obvious implementation, same run.

1. Local pool: a 16-point grid of paper-size analyses (n=750, d=1000, m=1250; 4 values of
   data.nu x 4 seeds). The obvious implementation is a serial loop in this process calling
   analysis.analyze + outputs.write_run; ours is `gradrank sweep`'s LocalExecutor with 1 and
   with 2 workers. Every case uses 1 torch thread per worker (torch.set_num_threads(1)), so
   the ratio measures process parallelism, not BLAS threads. Wall times include the pool's
   start-up (fork server importing torch).
2. Dask: per-point overhead of the Dask path over a direct call, on tiny points (n=d=m=16),
   with a LocalCluster of 1 single-threaded worker started (and warmed) beforehand:
   (Dask wall time - direct wall time) / points.

Run: python benchmarks/bench_sweep.py [--points 16] [--tiny 60]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from gradrank import sweep
from gradrank.executors import DaskExecutor, LocalExecutor


def grid(sets, nus, seeds):
    base, spec = sweep.load(None, sets, grid=[f"data.nu={','.join(map(str, nus))}"], seeds=seeds)
    return base, spec, sweep.points(base, spec)


def direct(root: Path, base, spec, pts) -> float:
    """The obvious implementation: a serial loop over run_point in this process."""
    store = sweep.open_store(root, base, spec, pts, {"name": "direct"})
    t = time.perf_counter()
    for p in pts:
        out = sweep.run_point(sweep.PointTask(str(store.root), p.hash, p.config.to_dict(), "analyze"))
        assert out.status == "done", out.error
    return time.perf_counter() - t


def through(root: Path, base, spec, pts, executor) -> float:
    store = sweep.open_store(root, base, spec, pts, executor.info())
    t = time.perf_counter()
    failed = sweep.run(store, pts, "analyze", executor, threads=executor.threads)
    assert not failed
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=16, help="paper-size points (4 nu values x points/4 seeds)")
    ap.add_argument("--tiny", type=int, default=60, help="tiny points for the Dask overhead")
    args = ap.parse_args()
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench-sweep-"))

    base, spec, pts = grid([], [0.1, 0.25, 0.4, 0.6], max(1, args.points // 4))
    n = len(pts)
    t_direct = direct(tmp / "direct", base, spec, pts)
    t1 = through(tmp / "local1", base, spec, pts, LocalExecutor(jobs=1, threads=1))
    t2 = through(tmp / "local2", base, spec, pts, LocalExecutor(jobs=2, threads=1))
    print(f"local pool, {n} paper-size points, 1 torch thread per worker:")
    print(f"  serial loop in-process (obvious) {t_direct:7.2f} s  {n / t_direct:6.3f} points/s")
    print(f"  gradrank sweep, 1 worker         {t1:7.2f} s  {n / t1:6.3f} points/s")
    print(f"  gradrank sweep, 2 workers        {t2:7.2f} s  {n / t2:6.3f} points/s")
    print(f"  throughput ratio 2 workers / 1 worker       {t1 / t2:5.2f}x (target >= 1.8x)")
    print(f"  throughput ratio 2 workers / serial loop    {t_direct / t2:5.2f}x")

    from distributed import Client, LocalCluster

    sets = ["data.n=16", "data.d=16", "model.width=16", "analysis.top_k=4"]
    nus = [round(0.01 * i, 2) for i in range(args.tiny)]
    base, spec, tiny = grid(sets, nus, 0)
    warm_base, warm_spec, warm = grid(sets, [0.999], 0)
    direct(tmp / "tiny-warm", warm_base, warm_spec, warm)
    t_direct = direct(tmp / "tiny-direct", base, spec, tiny)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        client.run(torch.set_num_threads, 1)
        through(tmp / "tiny-dask-warm", warm_base, warm_spec, warm, DaskExecutor(scheduler=cluster.scheduler_address))
        t_dask = through(tmp / "tiny-dask", base, spec, tiny, DaskExecutor(scheduler=cluster.scheduler_address))
    per_direct, per_dask = t_direct / len(tiny), t_dask / len(tiny)
    print(f"dask, {len(tiny)} tiny points, 1 single-threaded worker:")
    print(f"  direct call (obvious)  {1e3 * per_direct:7.2f} ms/point")
    print(f"  dask path              {1e3 * per_dask:7.2f} ms/point  ({per_dask / per_direct:4.2f}x)")
    print(f"  overhead per point     {1e3 * (per_dask - per_direct):7.2f} ms (target < 50 ms)")
    print(f"(stores under {tmp})")


if __name__ == "__main__":
    main()
