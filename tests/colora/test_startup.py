"""The collector pause around the app entry modules' imports restores what it found."""

from __future__ import annotations

import gc

import pytest

from colora.startup import collector_paused


@pytest.fixture
def restore_collector():
    was_enabled = gc.isenabled()
    yield
    (gc.enable if was_enabled else gc.disable)()


def test_the_collector_is_off_inside_and_on_again_after(restore_collector):
    gc.enable()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_an_import_error_still_switches_it_back_on(restore_collector):
    gc.enable()
    with pytest.raises(ImportError), collector_paused():
        import fedcolora_no_such_module  # noqa: F401
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off(restore_collector):
    gc.disable()
    with collector_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()
