"""Gradient monitoring inside the user's own training loop (docs/watch.md)."""

from gradrank.monitor.watch import Monitor, watch

__all__ = ["Monitor", "watch"]
