"""Shared test settings: few threads (the CI machine has 2 shared cores), a fixed seed."""

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "2")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def tok():
    """The offline tiny tokenizer (Qwen special tokens + chat template), built once per test session."""
    from spatial_mllm.models.tiny import tiny_tokenizer

    return tiny_tokenizer()


@pytest.fixture(scope="session")
def proc(tok):
    """The tiny SpatialMLLMProcessor around :func:`tok`."""
    from spatial_mllm.models.tiny import tiny_processor

    return tiny_processor(tok)
