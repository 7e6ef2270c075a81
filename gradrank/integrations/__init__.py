"""Thin adapters of the gradient monitor (gradrank.monitor) to training libraries (docs/watch.md)."""
