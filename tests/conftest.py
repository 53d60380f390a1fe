import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """The suite's models are tiny: one thread runs them fastest, and thread pools stall on a loaded 2-core CI box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
