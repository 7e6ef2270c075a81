"""`render_dir` in a process of its own, started by the CLI before it imports torch: matplotlib's
import (0.3-0.5 s, the larger half of a run report's cost) then runs on another core while the
command computes, and only the drawing is left when the run directory is written.

Protocol, one JSON line each way: the worker prints {"ready": true} once its imports are done;
each request {"dir": ..., "formats": [...]} gets {"files": [...]} or {"error": "..."}. It exits at
the end of its input (the CLI closed it, or died).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def serve(lines, reply, pdf: bool = False) -> None:
    """Answer render requests read from `lines` until they end; each answer is one flushed line."""
    import matplotlib.backends.backend_svg  # noqa: F401  (the imports this process is for)
    import matplotlib.figure  # noqa: F401

    from gradrank.report import figures, render  # noqa: F401

    if pdf:
        import weasyprint  # noqa: F401

    def answer(doc: dict) -> None:
        reply.write(json.dumps(doc) + "\n")
        reply.flush()

    answer({"ready": True})
    for line in lines:
        try:
            req = json.loads(line)
            files = render.render_dir(Path(req["dir"]), tuple(req["formats"]))
            answer({"files": [str(p) for p in files]})
        except Exception as exc:  # noqa: BLE001 - the caller renders again in its own process and raises there
            answer({"error": f"{exc.__class__.__name__}: {exc}"})


def main(pdf: bool = False) -> None:
    """Serve stdin, then leave without the interpreter's teardown (0.2 s with matplotlib loaded): every
    file was written, atomically, before its answer."""
    serve(sys.stdin, sys.stdout, pdf)
    os._exit(0)
