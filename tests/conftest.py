import pytest
import torch
from models import res_conv_net


@pytest.fixture(autouse=True)
def _one_thread():
    """The test models are tiny: one intra-op thread is fastest and immune to a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def net():
    return res_conv_net()


@pytest.fixture
def img():
    torch.manual_seed(1)
    return torch.randn(3, 3, 8, 8)


@pytest.fixture
def data():
    """An input batch and a nearby per-example baseline (DeepLift and rule tests)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 3, 8, 8, generator=g)
    b = 0.2 * torch.randn(3, 3, 8, 8, generator=g)
    return x, b
