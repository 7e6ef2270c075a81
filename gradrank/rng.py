"""Named random streams: one seed, one independent stream per consumer.

Every random draw in gradrank comes from `generator(seed, name, *index)`, a torch generator seeded
by numpy's SeedSequence([seed, *STREAMS[name], *index]), so changing one part of a config (the
width, the test-set size, the optimiser) never changes the draws of another. Each name has exactly
one consumer; tests/test_rng.py draws from every stream and checks they are independent.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.random import SeedSequence

STREAMS: dict[str, tuple[int, ...]] = {
    "bulk": (1,),  # the bulk rows X_B and the bulk eigenbasis
    "spike": (2,),  # q and the latent z
    "target": (3,),  # index directions and teacher weights (shared by train and test)
    "weights": (4,),  # W at initialisation
    "outer": (5,),  # a
    "test": (6,),  # the test inputs
    "noise": (7,),  # label noise of the training targets
    "embed": (8,),  # the random-feature embedding of real data
    "split": (9,),  # the train/test split of a built-in real data set
    "tracking": (9, 1),  # the start block of training's warm top-k tracking
    "input_noise": (10,),  # input-noise draws (index: the draw)
    "test_noise": (11,),  # label noise of the test targets
    "batches": (12,),  # SGD / Adam mini-batch order
    "patches": (13,),  # where the image patches are cut
    "onestep_readout": (16,),  # the one-step protocol's fresh readout inputs
    "onestep_readout_noise": (17,),  # and the label noise of their targets
    "onestep_holdout": (14,),  # the one-step protocol's split of the training rows that chooses the ridge
    "onestep_bootstrap": (15,),  # bootstrap resamples of the one-step correlations
    "hidden": (18,),  # the deep MLP's hidden layers 2.. (index: the layer)
    "sentences": (19,),  # which pydoc topics give MiniLM's sentence pairs
    "projector_random": (20,),  # the advisor's random projector (index: layer, refresh step)
    "projector_start": (21,),  # the start block of the advisor's top-k refreshes (index: layer)
}


def generator(seed: int, stream: str, *index: int) -> torch.Generator:
    """A generator for one named stream (and optional sub-indices, e.g. a noise draw) of the seed."""
    state = SeedSequence([seed, *STREAMS[stream], *index]).generate_state(2, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))
