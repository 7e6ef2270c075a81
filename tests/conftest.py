import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture
def small_cfg():
    """A reduced spiked setting with the paper's ratios d/n = 4/3, m/n = 5/3."""
    from gradrank import config

    def make(*sets, seed=0, n=60, d=80, m=100):
        return config.load(sets=[f"data.n={n}", f"data.d={d}", f"model.width={m}", *sets], seed=seed)

    return make
