"""pytest set-up for the conformance suite: float32 accuracy on GPUs, the GPU guard, the modes."""

import os

import pytest

from . import harness, profiles

profiles.load()


def pytest_addoption(parser):
    parser.addoption(
        "--require-gpu",
        action="store_true",
        default=False,
        help="fail unless the backend sees a GPU (also: LACSS_REQUIRE_GPU=1)",
    )


def pytest_configure(config):
    harness.disable_tf32()
    wants_gpu = config.getoption("--require-gpu") or os.environ.get("LACSS_REQUIRE_GPU") == "1"
    if wants_gpu and harness.device_kind() != "gpu":
        raise pytest.UsageError(
            f"--require-gpu: the {harness.BACKEND} backend sees no GPU "
            f"(device {harness.device_kind()})"
        )


def pytest_report_header(config):
    return f"lacss conformance: backend={harness.BACKEND} device={harness.device_kind()}"


@pytest.fixture(params=harness.modes())
def mode(request):
    """Execution mode of the op under test: 'eager', 'jit' (JAX) or 'compile' (torch)."""
    return request.param
