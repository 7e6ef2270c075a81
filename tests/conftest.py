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


@pytest.fixture
def one_thread():
    """One torch/BLAS thread for a test's small problems: on a busy machine spinning OpenMP
    threads make them many times slower (sweep tests: direct reference runs)."""
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(before)
