"""Model-agnostic maths: factors' split, spectra, measures, trust, fits (no config, no I/O)."""
