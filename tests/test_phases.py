"""Named phases: exclusive times per phase (what `time/<phase>` logs), and where a failure left a rank."""

from __future__ import annotations

import pytest

from pmd.phases import PhaseClock


class FakeTime:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_nested_phases_are_charged_exclusively_and_reset_on_take():
    now = FakeTime()
    clock = PhaseClock(clock=now)
    with clock.phase("backward"):
        now.t += 1.0
        with clock.phase("generate"):
            now.t += 5.0
        now.t += 2.0
    now.t += 10.0  # between phases: charged to nothing
    assert clock.take() == {"time/backward": 3.0, "time/generate": 5.0}
    assert clock.take() == {}


def test_an_open_phase_is_charged_up_to_take():
    now = FakeTime()
    clock = PhaseClock(clock=now)
    clock.begin("optimizer")
    now.t += 0.5
    assert clock.take() == {"time/optimizer": 0.5}
    now.t += 0.25
    clock.end("optimizer")
    assert clock.take() == {"time/optimizer": 0.25}
    assert clock.current == "between phases"


def test_where_names_the_innermost_phase_an_exception_left():
    clock = PhaseClock()
    clock.step = 3
    with pytest.raises(RuntimeError):
        with clock.phase("backward"):
            with clock.phase("loss_forward"):
                raise RuntimeError("Timed out waiting 5000ms")
    assert clock.current == "between phases"  # the stack unwound ...
    assert clock.where() == ("loss_forward", 3)  # ... but the failure's place is kept for the error line
    with clock.phase("generate"):  # a handled failure is forgotten once the next phase begins
        assert clock.where() == ("generate", 3)


def test_end_closes_phases_an_exception_left_open():
    clock = PhaseClock()
    clock.begin("save")
    clock.begin("inner")
    clock.end("save")
    assert clock.stack == []
