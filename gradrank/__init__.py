"""gradrank: low-rank structure of first-layer gradients in two-layer networks.

Implements Sonthalia, Murray & Montúfar, "Low Rank Gradients and Where to Find Them"
(NeurIPS 2025). Importing the package does not import torch; `gradrank.analyze`, `decompose`,
`train`, `layers`, `advise` and `save` are the API of gradrank.api, loaded on first use.
"""

from gradrank._version import __version__  # noqa: F401

_API = ("analyze", "decompose", "train", "layers", "advise", "save")


def __getattr__(name):
    if name in _API:
        from gradrank import api

        return getattr(api, name)
    raise AttributeError(f"module 'gradrank' has no attribute {name!r}")
