"""Head masking on real footage: the anonymized frames of OpenCV's vtest.avi (Debian's
opencv-doc, fetched with apt, never committed) cover the heads of real people, including people
walking away from the camera and faces far too small for CenterFace, with the product's defaults.

The truth is ours: the centre of each of the 33 heads in 5 frames, by hand
(``tests/data/footage/vtest_heads.json``, which says how). The frame loop is the service's
(:func:`firmware.runtime.pipeline.run` through the counting benchmark's ``run_counted``: NanoDet
person tracks with head masking, CenterFace and the mask hold), with solid fill so that
covered pixels can be told from uncovered ones. A head is covered when its centre lies inside a
mask the frame reports and the 5x5 pixels around it are dark.

Measured here: 31 of 33 with the defaults. The two left: the hood of a woman in a group of
three, whose centre is inside a head mask but 2 px from its edge (20 % of the 5x5 patch shows),
and a man about 20 px tall beside the van, smaller than either detector finds. With
``[people] enabled = false`` (faces only) 13 of 33 are covered, so this test fails if head
masking stops working. The floor is 30, one head of slack for another CPU's rounding."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from firmware.anonymize.stage import Anonymized
from firmware.config.settings import Config
from firmware.count import LineCounter
from firmware.detect import nanodet
from firmware.detect.centerface import CenterFace
from firmware.frames import Frame
from firmware.sources.video import VideoFileSource
from tests.benchmarks.bench_counting import RecordingCounter, run_counted
from tests.benchmarks.bench_counting_real import FOOTAGE, fetch_clip

pytestmark = pytest.mark.integration

HEADS = FOOTAGE / "vtest_heads.json"


class FirstFrames(VideoFileSource):
    """The clip's frames up to ``last`` (the loop needs no more)."""

    def __init__(self, path: Path, last: int) -> None:
        super().__init__(path)
        self.last = last

    def frames(self) -> Iterator[Frame]:
        for frame in super().frames():
            if frame.index > self.last:
                return
            yield frame


def anonymized_frames(clip: Path, wanted: set[int]) -> dict[int, Anonymized]:
    """The service's frame loop with the default settings (solid fill) over ``clip``; the
    anonymized results of the ``wanted`` frames."""
    config = Config.model_validate({"anonymizer": {"mode": "solid"}})
    assert config.people.enabled and config.people.head_masking  # the defaults under test
    got: dict[int, Anonymized] = {}

    def keep(result: Anonymized) -> None:
        if result.index in wanted:
            got[result.index] = result

    d = config.detector
    with FirstFrames(clip, max(wanted)) as source:
        run_counted(
            source,
            config,
            CenterFace(d.model, threshold=d.threshold, threads=d.threads),
            RecordingCounter(LineCounter(config.counter, *source.size)),
            fps=source.fps,
            person_detector=nanodet.from_config(config.people),
            sinks=[keep],
        )
    return got


def covered(image: NDArray[np.uint8], masks: NDArray[np.float32], x: int, y: int) -> bool:
    inside = bool(
        ((masks[:, 0] <= x) & (x <= masks[:, 2]) & (masks[:, 1] <= y) & (y <= masks[:, 3])).any()
    )
    patch = image[y - 2 : y + 3, x - 2 : x + 3]
    return inside and float((patch.max(axis=2) < 40).mean()) >= 0.95


def test_heads_of_real_people_are_covered_with_the_defaults() -> None:
    truth = json.loads(HEADS.read_text())
    try:
        clip = fetch_clip(truth["sha256"])
    except SystemExit as exc:  # the fetcher's message names the fix
        pytest.fail(str(exc))
    heads = {int(k): v for k, v in truth["heads"].items()}
    assert sum(len(v) for v in heads.values()) == 33
    results = anonymized_frames(clip, set(heads))
    assert set(results) == set(heads)
    uncovered = [
        (i, (x, y))
        for i, points in heads.items()
        for x, y in points
        if not covered(results[i].image, results[i].masks, x, y)
    ]
    assert not any(results[i].failed for i in heads)
    assert len(uncovered) <= 3, f"heads left uncovered (frame, centre): {uncovered}"
