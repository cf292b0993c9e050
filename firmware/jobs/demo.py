"""``anoncam demo``: the whole pipeline on a synthetic scene of real faces, on any machine.

A scene of people with real face photos (from scikit-image's bundled images) on whole drawn
bodies walking across a counting line is anonymized (every face CenterFace finds, and the head
of every person NanoDet finds), counted from person tracks (the product's way to count: people
walking away show no face); closed windows go through the outbox to an
MQTT broker (Mosquitto when installed, else an embedded one) and come back through a subscriber
that validates them against the contract. The anonymized video is written to disk, and the
counts are compared with the scene's ground truth.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware.config.settings import Config, MqttConfig, from_dict

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoResult:
    video: Path
    frames: int
    windows_published: int
    windows_received: int
    entries: int
    exits: int
    true_entries: int
    true_exits: int
    broker: str
    seconds: float


def demo_config(
    out_dir: Path,
    *,
    host: str,
    port: int,
    protocol: str,
    duration_s: float,
    width: int,
    height: int,
    fps: float,
    window_s: int,
) -> Config:
    return from_dict(
        {
            "site": "demo-store",
            "device": "door-1",
            "state_dir": str(out_dir / "state"),
            "source": {
                "kind": "synthetic",
                "width": width,
                "height": height,
                "fps": fps,
                "duration_s": duration_s,
                "bodies": True,
            },
            # the Pi detects on a 640x360 second stream; do the same here
            "detector": {"detect_width": 640, "detect_height": 360},
            "people": {"enabled": True},
            "windows": {"seconds": window_s},
            "mqtt": {"host": host, "port": port, "protocol": protocol},
        },
        origin="demo settings",
    )


def run_demo(
    out_dir: Path,
    *,
    duration_s: float = 40.0,
    width: int = 1280,
    height: int = 720,
    fps: float = 15.0,
    window_s: int = 10,
    mqtt_host: str | None = None,
    mqtt_port: int = 1883,
    broker: str = "auto",
    on_window: Callable[[Any], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> DemoResult:
    from firmware.jobs.demo_broker import DemoBroker
    from firmware.media.video_writer import VideoWriter
    from firmware.mqtt.subscribe.client import Received, Subscriber
    from firmware.runtime.service import Service
    from firmware.sources.synthetic.scene import SyntheticScene

    started = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    own_broker: DemoBroker | None = None
    if mqtt_host is None:
        own_broker = DemoBroker(out_dir / "broker", prefer=broker).start()
        host, port, protocol, broker_name = (
            own_broker.host,
            own_broker.port,
            own_broker.protocol,
            f"{own_broker.kind} on {own_broker.host}:{own_broker.port}",
        )
    else:
        host, port, protocol, broker_name = mqtt_host, mqtt_port, "auto", f"{mqtt_host}:{mqtt_port}"
    config = demo_config(
        out_dir,
        host=host,
        port=port,
        protocol=protocol,
        duration_s=duration_s,
        width=width,
        height=height,
        fps=fps,
        window_s=window_s,
    )
    truth = SyntheticScene(width, height, fps, duration_s, bodies=True)  # the same scene
    total = truth.frame_count
    received: list[dict[str, Any]] = []

    def got(r: Received) -> None:
        if r.verdict.accepted:
            received.append(r.window.body)
        if on_window is not None:
            on_window(r)

    mqtt = MqttConfig.model_validate({"host": host, "port": port, "protocol": protocol})
    subscriber = Subscriber(mqtt, on_window=got)
    video = out_dir / "anonymized.mp4"
    writer = VideoWriter(video, fps=fps, size=(width, height))
    try:
        subscriber.connect()
        service = Service(
            config,
            drain_timeout_s=30.0,
            extra_sinks=(lambda result: writer.write(result.image),),
            on_progress=(lambda stats: on_progress(stats.frames, total)) if on_progress else None,
        )
        result = service.run()
        writer.commit()
        subscriber.wait(count=result.windows, timeout=10.0)
    except BaseException:
        writer.abort()
        raise
    finally:
        subscriber.close()
        if own_broker is not None:
            own_broker.stop()
    entries = sum(int(w["entries"]) for w in received)
    exits = sum(int(w["exits"]) for w in received)
    return DemoResult(
        video=video,
        frames=result.frames,
        windows_published=result.windows,
        windows_received=len(received),
        entries=entries,
        exits=exits,
        true_entries=sum(1 for c in truth.crossings if c.direction == "entry"),
        true_exits=sum(1 for c in truth.crossings if c.direction == "exit"),
        broker=broker_name,
        seconds=time.monotonic() - started,
    )
