"""Set-up shared by every test module."""

from __future__ import annotations

import faulthandler
from collections.abc import Iterator

import pytest


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    """On a crash in native code, print the crashing thread's stack alone.

    pytest's faulthandler prints every thread, newest first: behind a few idle worker threads
    the crashing one (usually the main thread, the test) falls out of a shortened CI log.
    """
    try:
        from _pytest.faulthandler import fault_handler_stderr_fd_key
    except ImportError:  # pragma: no cover - another pytest layout: keep its handler
        return
    fd = config.stash.get(fault_handler_stderr_fd_key, None)
    if fd is not None:
        faulthandler.enable(file=fd, all_threads=False)


_USE_ARM = "napari_sciz.core.lossy.start.USE_ARM"


@pytest.fixture(scope="module")
def no_arm_module() -> Iterator[None]:
    """Neural fits without the ARM entropy model for a module's module-scoped fixtures.

    Those are made before any test's own fixtures (:func:`no_arm` comes too late for them):
    a module-scoped fixture that fits a lossy file requests this one.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_USE_ARM, False)
        yield


@pytest.fixture
def no_arm(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, no_arm_module: None
) -> None:
    """Neural fits without the ARM entropy model (unless the test is marked ``arm``).

    Fitting the ARM takes most of a small test fit's time (two fits of 300 iterations); the
    modules that test what a lossy fit does with its file (dtypes, shapes, regions) use this,
    and their ``arm``-marked tests (and tests/test_arm.py) test the ARM itself.
    """
    monkeypatch.setattr(_USE_ARM, request.node.get_closest_marker("arm") is not None)
