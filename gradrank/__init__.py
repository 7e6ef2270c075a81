"""gradrank: low-rank structure of first-layer gradients in two-layer networks.

Implements Sonthalia, Murray & Montúfar, "Low Rank Gradients and Where to Find Them"
(NeurIPS 2025). Importing the package does not import torch; `gradrank.analyze`, `decompose`,
`train`, `layers`, `advise`, `onestep`, `sweep`, `load`, `save` and `Result` are the API of
gradrank.api (docs/api.md), loaded on first use.
"""

from gradrank._version import __version__  # noqa: F401
from gradrank.errors import InputError  # noqa: F401  (every bad input of the API raises it)

_API = ("analyze", "decompose", "train", "layers", "advise", "onestep", "sweep", "load", "save", "Result")


def __getattr__(name):
    if name == "watch":  # the monitor for the user's own loop (docs/watch.md)
        from gradrank.monitor import watch

        return watch
    if name in _API:
        from gradrank import api

        return getattr(api, name)
    raise AttributeError(f"module 'gradrank' has no attribute {name!r}")
