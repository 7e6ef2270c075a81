"""gradrank: low-rank structure of first-layer gradients in two-layer networks.

Implements Sonthalia, Murray & Montúfar, "Low Rank Gradients and Where to Find Them"
(NeurIPS 2025). Importing the package does not import torch.
"""

__version__ = "0.1.0"
