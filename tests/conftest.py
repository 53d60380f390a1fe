import pytest
import torch
from accelerate.state import AcceleratorState, GradientState


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """The suite's models are tiny: one thread runs them fastest, and thread pools stall on a loaded 2-core CI box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """accelerate keeps one process-wide state, fixed by the first `Accelerator`: a test that runs a script in-process
    (moscale evaluate, train_vq.py) must not hand its settings (mixed precision, CPU) to the next one. This is what
    accelerate's own `AccelerateTestCase` does after every test."""
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
