"""Test-wide settings: one intra-op thread (tiny tensors thrash with more on a shared 2-core box)."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _single_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
