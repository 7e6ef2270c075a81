"""Data sets: spiked data (the paper's model) and real data."""
