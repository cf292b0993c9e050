"""The hold schedule for windows nobody subscribes to (PUBACK 0x10)."""

from __future__ import annotations

import pytest

from firmware.mqtt.publish import unsubscribed_pause


@pytest.mark.parametrize(
    ("waited_s", "pause_s"),
    [(0.0, 0.5), (1.0, 0.5), (2.0, 0.5), (4.0, 1.0), (40.0, 10.0), (240.0, 60.0), (1e6, 60.0)],
)
def test_a_held_window_waits_a_quarter_of_its_wait_so_far_within_bounds(
    waited_s: float, pause_s: float
) -> None:
    assert unsubscribed_pause(waited_s) == pause_s


def test_a_subscriber_back_after_an_absence_gets_the_windows_within_a_quarter_of_it() -> None:
    """Replay the offers a held window gets: wherever the absence ends, the next offer comes
    at most a quarter of the absence (or 0.5 s) later; a doubling ramp from 2 s, the old
    schedule, was late by up to the whole absence (an offer at 2 s, then 6 s, 14 s, ...)."""
    offers = [0.0]
    while offers[-1] < 3600:
        offers.append(offers[-1] + unsubscribed_pause(offers[-1]))
    for back in (0.7, 1.3, 5.0, 33.0, 700.0, 3000.0):
        late = min(t for t in offers if t >= back) - back
        assert late <= max(0.5, back / 4) + 1e-9, (back, late)
    assert 20 < len(offers) < 90  # an hour's outage: a few dozen offers per device, not thousands
