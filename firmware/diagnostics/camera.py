"""Camera: picamera2 importable, a camera listed, frames arriving at the configured rate.

With ``source.kind = "file"`` or ``"synthetic"`` there is no camera to check; the source itself
is opened instead (the file exists and decodes, the synthetic scene renders a frame), through the
same :func:`firmware.sources.open_source` the service uses.

libcamera lets one process hold a camera. While the anoncam service runs it holds it, so listing
(``rpicam-hello --list-cameras`` acquires each camera) and measuring the frame rate would fail for
a reason that is not a fault; those checks are skipped then, and the service's own health
messages report the camera.
"""

from __future__ import annotations

import importlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from firmware.config.settings import SourceConfig
from firmware.diagnostics.base import Check, Context, fail, ok, skip, warn
from firmware.diagnostics.systemd import service_holds_camera
from firmware.errors import AnoncamError

if TYPE_CHECKING:
    from firmware.sources.base import FrameSource

logger = logging.getLogger(__name__)

NAMES = ("camera.source", "camera.picamera2", "camera.list", "camera.frames")

#: How long frames are counted to measure the rate.
MEASURE_S = 3.0
#: Below this fraction of the configured rate the camera is "slow" (low light, throttling).
MIN_RATE_FRACTION = 0.8

_HINT_NO_CAMERA = (
    "power off, then check the ribbon cable: fully inserted and latched at both ends, contacts "
    "facing the right way (Pi 5 needs the narrow 22-pin cable); with camera_auto_detect=1 in "
    "/boot/firmware/config.txt most modules are found, others need a dtoverlay= line"
)
_HINT_SERVICE_HOLDS = (
    "to test the camera itself: sudo systemctl stop anoncam, run diagnose, "
    "then sudo systemctl start anoncam"
)

# "0 : imx708_wide [4608x2592 10-bit RGGB] (/base/axi/pcie@120000/rp1/i2c@88000/imx708@1a)"
_CAMERA_LINE = re.compile(r"^\s*(\d+)\s*:\s*(\S+)\s*\[([^\]]*)\]\s*\((.*)\)\s*$")


@dataclass(frozen=True)
class ListedCamera:
    index: int
    sensor: str
    resolution: str
    path: str


def parse_camera_list(text: str) -> list[ListedCamera]:
    """The cameras in ``rpicam-hello --list-cameras`` output (empty for "No cameras available!")."""
    cameras = []
    for line in text.splitlines():
        match = _CAMERA_LINE.match(line)
        if match:
            index, sensor, props, path = match.groups()
            cameras.append(ListedCamera(int(index), sensor, props.split(" ")[0], path))
    return cameras


def _open_configured(config: SourceConfig) -> FrameSource:
    from firmware.sources import open_source

    return open_source(config)


#: Opens the configured source: :func:`firmware.sources.open_source` on a device; tests pass
#: a Picamera2Source built on the picamera2 stand-in (the Pi camera is not reachable in CI).
SourceOpener = Callable[[SourceConfig], "FrameSource"]


def _measure_source(
    ctx: Context, seconds: float, opener: SourceOpener = _open_configured
) -> tuple[int, float | None, str]:
    """Open the configured source and read frames for up to ``seconds`` (or as many frames as
    ``source.fps`` promises in that time).

    Returns (frames read, fps measured from the frames' own timestamps or None, the source's
    description). Raises :class:`AnoncamError` from the source.
    """
    deadline = time.monotonic() + seconds
    enough = max(10, int(ctx.config.source.fps * seconds))
    first_ns: int | None = None
    last_ns = 0
    count = 0
    with opener(ctx.config.source) as source:
        description = source.describe()
        for frame in source.frames():
            if first_ns is None:
                first_ns = frame.t_ns
            last_ns = frame.t_ns
            count += 1
            if not source.live and count >= 2:
                break  # a file or scene: decoding two frames proves it opens
            if count >= enough or time.monotonic() >= deadline:
                break
    if first_ns is None or count < 2 or last_ns <= first_ns:
        return count, None, description
    return count, (count - 1) * 1e9 / (last_ns - first_ns), description


def check_source(ctx: Context) -> Check:
    """For ``file`` and ``synthetic`` sources: open it and decode a frame."""
    name = "camera.source"
    kind = ctx.config.source.kind
    figures: dict[str, object] = {"kind": kind}
    if ctx.config.source.path is not None:
        figures["path"] = str(ctx.config.source.path)
    try:
        count, _fps, description = _measure_source(ctx, ctx.timeout_s)
    except AnoncamError as exc:
        return fail(
            name,
            f"source.kind = {kind!r}: {exc.message}",
            exc.hint or "check source.path in the config",
            **figures,
        )
    except ModuleNotFoundError as exc:
        return warn(
            name,
            f"source.kind = {kind!r}: this build lacks {exc.name}",
            "reinstall anoncam",
            **figures,
        )
    figures["frames_read"] = count
    if count == 0:
        return fail(
            name,
            f"source.kind = {kind!r}: {description} gave no frame",
            "check that the file is a complete video or a folder of JPEG/PNG images",
            **figures,
        )
    detail = f"{description}: frames decode"
    if kind == "synthetic" and ctx.host.is_raspberry_pi:
        return warn(
            name,
            f"{detail}, but this is a Raspberry Pi and the camera is not used",
            'set source.kind = "picamera2" to count with the camera',
            **figures,
        )
    return ok(name, detail, **figures)


def check_picamera2(ctx: Context) -> Check:
    name = "camera.picamera2"
    if not ctx.host.is_raspberry_pi:
        return warn(
            name,
            f"source.kind = 'picamera2' but this is not a Raspberry Pi "
            f"({ctx.host.model or ctx.host.hardware_class})",
            'off a Pi use source.kind = "file" (a video or image folder) or "synthetic"',
        )
    try:
        module = importlib.import_module("picamera2")
    except ModuleNotFoundError:
        return fail(
            name,
            "picamera2 is not installed for this Python",
            "sudo apt install python3-picamera2, and create the venv with "
            "--system-site-packages so it sees the apt package",
        )
    except Exception as exc:  # any import failure is the finding; libcamera raises its own types
        text = f"{type(exc).__name__}: {exc}"
        hint = "reinstall python3-picamera2 (sudo apt install --reinstall python3-picamera2)"
        if "numpy.dtype size changed" in text or "numpy" in text.lower():
            hint = (
                "the venv's numpy 2 breaks the apt picamera2/simplejpeg built for numpy 1.x: "
                "pip uninstall numpy in the venv so the system numpy is used"
            )
        return fail(name, f"import picamera2 failed: {text[:200]}", hint)
    version = getattr(module, "__version__", None)
    return ok(name, f"picamera2 imports{f' ({version})' if version else ''}", version=version)


def check_list(ctx: Context) -> Check:
    name = "camera.list"
    if not ctx.host.is_raspberry_pi:
        return skip(name, "not a Raspberry Pi: no camera to list")
    if service_holds_camera(ctx.host):
        return skip(name, "the running anoncam service holds the camera", _HINT_SERVICE_HOLDS)
    for tool in ("rpicam-hello", "libcamera-hello"):  # libcamera-hello: Bullseye's name
        result = ctx.host.command(tool, "--list-cameras", timeout=max(10.0, ctx.timeout_s))
        if result is not None:
            break
    else:
        return warn(
            name,
            "rpicam-apps is not installed: cannot list cameras",
            "sudo apt install rpicam-apps",
        )
    cameras = parse_camera_list(result.stdout)
    figures = {
        "cameras": [
            {"index": c.index, "sensor": c.sensor, "resolution": c.resolution, "path": c.path}
            for c in cameras
        ],
    }
    if not result.ok and not cameras:
        return fail(
            name,
            f"{tool} --list-cameras failed: {result.first_error_line()}",
            "is another program using the camera? otherwise: " + _HINT_NO_CAMERA,
            **figures,
        )
    if not cameras:
        return fail(
            name, 'no camera detected ("No cameras available!")', _HINT_NO_CAMERA, **figures
        )
    listed = ", ".join(f"{c.index}: {c.sensor} {c.resolution}" for c in cameras)
    return ok(name, f"{len(cameras)} camera(s): {listed}", **figures)


def check_frames(ctx: Context, listed: Check, opener: SourceOpener = _open_configured) -> Check:
    name = "camera.frames"
    if not ctx.host.is_raspberry_pi:
        return skip(name, "not a Raspberry Pi: no camera frames to measure")
    if service_holds_camera(ctx.host):
        return skip(
            name,
            "the running anoncam service holds the camera; its health messages "
            "report the frame rate",
            _HINT_SERVICE_HOLDS,
        )
    if listed.status == "FAIL":
        return skip(name, "not tried: no camera listed")
    wanted = ctx.config.source.fps
    try:
        count, fps, _description = _measure_source(ctx, MEASURE_S, opener)
    except AnoncamError as exc:
        return fail(name, f"cannot capture: {exc.message}", exc.hint or _HINT_NO_CAMERA)
    except ModuleNotFoundError as exc:
        return warn(name, f"this build lacks {exc.name}: frames not measured", "reinstall anoncam")
    figures = {
        "frames": count,
        "fps": None if fps is None else round(fps, 2),
        "configured_fps": wanted,
    }
    if fps is None:
        return fail(
            name,
            f"{count} frame(s) in {MEASURE_S:.0f} s: the camera is not delivering",
            _HINT_NO_CAMERA,
            **figures,
        )
    detail = f"{fps:.1f} fps measured over {count} frames (configured {wanted:g})"
    if fps < MIN_RATE_FRACTION * wanted:
        return warn(
            name,
            f"{detail}: slower than configured",
            "low light lengthens the exposure and lowers the frame rate: add light or "
            "lower source.fps; also see power.throttling",
            **figures,
        )
    return ok(name, detail, **figures)


def run(ctx: Context) -> list[Check]:
    if ctx.config.source.kind != "picamera2":
        return [check_source(ctx)]
    importable = check_picamera2(ctx)
    listed = check_list(ctx)
    if importable.status == "FAIL":
        frames = skip("camera.frames", "not tried: picamera2 does not import")
    else:
        frames = check_frames(ctx, listed)
    return [importable, listed, frames]
