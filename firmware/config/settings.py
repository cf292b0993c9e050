"""Typed, validated device configuration.

The config is TOML on disk, read with :mod:`tomllib`, validated into frozen pydantic models that
forbid unknown keys. :func:`load` returns a :class:`Config` or raises :class:`ConfigError` listing
every problem with its dotted path (``mqtt.port: must be <= 65535``), so an installer fixes them
all in one go. Durations are seconds. Secrets are never inline: they come from files
(``password_file``) or systemd credentials.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)

from firmware.config.geometry import distance_to_line, polygon_problem
from firmware.contract import IDENTIFIER_PATTERN, TOPIC_PREFIX_PATTERN
from firmware.errors import ConfigError

Identifier = Annotated[
    str,
    Field(
        pattern=IDENTIFIER_PATTERN,
        description="lower-case letters, digits, '-' and '_'; used in MQTT topics",
    ),
]
# Strict scalars: TOML has real numbers and booleans, so a quoted "1883" or "60" is a mistake
# to report, not to coerce, and `seconds = true` must not become 1-second windows. Path, tuple
# and list fields stay lax: TOML gives strings and arrays for them. An int is a valid Float.
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
Bool = Annotated[bool, Strict()]
Unit = Annotated[float, Strict(), Field(ge=0.0, le=1.0)]


class _Section(BaseModel):
    # TOML has nan and inf literals; no setting means either, and nan slips past every bound
    # check (all comparisons with it are false).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SourceConfig(_Section):
    kind: Literal["picamera2", "file", "synthetic"] = Field(
        "synthetic",
        description="where frames come from: the Pi camera, a video/image folder, or a demo scene",
    )
    path: Path | None = Field(None, description="video file or image folder when kind = 'file'")
    width: Int = Field(
        1280, ge=64, le=4096, description="main stream width in pixels (picamera2, synthetic)"
    )
    height: Int = Field(
        720, ge=64, le=4096, description="main stream height in pixels (picamera2, synthetic)"
    )
    fps: Float = Field(
        15.0, gt=0, le=120, description="frame rate asked of the camera / synthetic scene"
    )
    lores_width: Int = Field(
        640,
        ge=32,
        le=4096,
        description="detection stream width (picamera2). Smaller is faster but misses small, "
        "distant faces",
    )
    lores_height: Int = Field(
        360,
        ge=32,
        le=4096,
        description="detection stream height (picamera2); keep the main stream's aspect ratio, "
        "picamera2 does not",
    )
    duration_s: Float = Field(
        60.0, gt=0, le=31_536_000, description="length of the synthetic scene in seconds"
    )
    bodies: Bool = Field(
        False,
        description="synthetic scene: draw people as whole walking bodies a person detector "
        "sees (their feet cross the line; pair with [people] enabled); off: heads on torsos, "
        "counted by their faces",
    )

    @model_validator(mode="after")
    def _path_for_file(self) -> SourceConfig:
        if self.kind == "file" and self.path is None:
            raise ValueError(
                "source.kind = 'file' needs source.path (a video file or image folder)"
            )
        return self


class DetectorConfig(_Section):
    model: Path | None = Field(
        None,
        description="ONNX model path; default: the verified CenterFace from 'anoncam models fetch'",
    )
    threshold: Float = Field(
        0.2,
        gt=0.0,
        lt=1.0,
        description="face score threshold. Low (0.2) favours recall: a false mask costs little, "
        "a missed face leaks",
    )
    detect_width: Int | None = Field(
        None,
        ge=32,
        le=4096,
        description="run detection on a copy downscaled to this width (None: full size)",
    )
    detect_height: Int | None = Field(
        None, ge=32, le=4096, description="height of the detection copy"
    )
    threads: Int = Field(2, ge=1, le=64, description="onnxruntime intra-op threads")
    timeout_s: Float = Field(
        2.0,
        gt=0,
        le=60,
        description="a detection slower than this fails closed (frame fully masked)",
    )

    @model_validator(mode="after")
    def _both_or_neither(self) -> DetectorConfig:
        if (self.detect_width is None) != (self.detect_height is None):
            raise ValueError(
                "set both detector.detect_width and detector.detect_height, or neither"
            )
        return self


class PeopleConfig(_Section):
    enabled: Bool = Field(
        True,
        description="count people from a person detector (bodies, seen from any side) and cover "
        "the head of every person; off: count face tracks (misses people walking away: 22 of 47 "
        "crossings on real footage, against 46 of 47 from person tracks; README)",
    )
    model: Path | None = Field(
        None,
        description="ONNX person model; default: the verified NanoDet from 'anoncam models fetch'",
    )
    threshold: Float = Field(
        0.45,
        gt=0.0,
        lt=1.0,
        description="person score threshold; lower finds distant and occluded people and more "
        "false ones (0.35 fires on cones and signs in real footage)",
    )
    detect_width: Int = Field(
        576,
        ge=32,
        le=1024,
        multiple_of=32,
        description="person detection input width (a multiple of 32); keep the stream's aspect. "
        "NanoDet finds people from about 20 px tall in its input: 576x320 counts people from about "
        "1/16 of the frame height (real footage: 14 of 14 crossings; 448x256: 13 of 14)",
    )
    detect_height: Int = Field(
        320, ge=32, le=1024, multiple_of=32, description="person detection input height"
    )
    every_n_frames: Int = Field(
        2,
        ge=1,
        le=30,
        description="run the person detector on one frame in N; the tracker predicts between",
    )
    threads: Int = Field(2, ge=1, le=64, description="onnxruntime intra-op threads")
    head_masking: Bool = Field(
        True,
        description="cover the head region of every person box too, so a face too small or "
        "turned for the face detector is still anonymized; keep on",
    )


class AnonymizerConfig(_Section):
    mode: Literal["mosaic", "blur", "solid"] = Field("mosaic", description="how a face is covered")
    shape: Literal["ellipse", "box"] = Field(
        "box", description="shape of the mask; box leaves no head outline to re-detect"
    )
    mask_scale: Float = Field(
        1.6,
        ge=1.0,
        le=3.0,
        description="mask size relative to the detected box; 1.6 hides the head outline too "
        "(see anonymize.py)",
    )
    hold_s: Float = Field(
        0.5,
        ge=0.0,
        le=10.0,
        description="keep covering a face this long after the detector last saw it "
        "(temporal safety)",
    )


class TrackerConfig(_Section):
    min_hits: Int = Field(
        3, ge=1, le=100, description="detections before a track is confirmed and counted"
    )
    max_age_s: Float = Field(
        1.0, gt=0, le=60, description="a track unseen this long ends and is forgotten"
    )
    iou_threshold: Float = Field(
        0.2, gt=0, lt=1, description="minimum overlap to associate a detection with a track"
    )


class ZoneConfig(_Section):
    name: Identifier
    polygon: list[tuple[Unit, Unit]] = Field(
        description="polygon corners in normalized image coordinates (0..1)",
        min_length=3,
        max_length=64,
    )

    @field_validator("polygon")
    @classmethod
    def _simple(cls, v: list[tuple[float, float]]) -> list[tuple[float, float]]:
        problem = polygon_problem(v)
        if problem:
            raise ValueError(f"{problem}; give the corners in order around the zone")
        return v


Anchor = Literal["bottom", "centre"]
"""The point of a person box that stands for where the person is (see ``counter.anchor``)."""


class CounterConfig(_Section):
    anchor: Anchor = Field(
        "bottom",
        description="point of a person box tested against the line and zones: 'bottom' (the "
        "feet: a camera looking down at an angle, the usual mount) or 'centre' (a camera looking "
        "straight down from the ceiling)",
    )
    line: tuple[Unit, Unit, Unit, Unit] = Field(
        (0.0, 0.5, 1.0, 0.5), description="counting line x1, y1, x2, y2 in normalized coordinates"
    )
    inside: tuple[Unit, Unit] = Field(
        (0.5, 1.0),
        description="a point on the store side of the line; crossing towards it is an entry",
    )
    hysteresis: Float = Field(
        0.02,
        ge=0.0,
        le=0.5,
        description="normalized distance a track must pass beyond the line to count; stops "
        "wobble double counts",
    )
    zones: list[ZoneConfig] = Field(default_factory=list, description="optional occupancy zones")

    @model_validator(mode="after")
    def _geometry(self) -> CounterConfig:
        x1, y1, x2, y2 = self.line
        if (x1 - x2) ** 2 + (y1 - y2) ** 2 < 1e-6:
            raise ValueError("counter.line: the two end points must differ")
        px, py = self.inside
        side = (x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)
        if abs(side) < 1e-6:
            raise ValueError("counter.inside: the inside point must not lie on the counting line")
        distance = distance_to_line(self.inside, self.line)
        if distance <= self.hysteresis:
            # inside the band no side is ever settled, so the point would not say which side
            # is the store's as the counter sees it
            raise ValueError(
                f"counter.inside: the inside point is {distance:.3f} from the counting line, "
                f"within the hysteresis band ({self.hysteresis:g}); pick a point further into "
                "the store"
            )
        names = [z.name for z in self.zones]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"counter.zones: duplicate zone name(s) {', '.join(dupes)}")
        return self


class WindowConfig(_Section):
    seconds: Int = Field(
        60, ge=1, le=86_400, description="length of a counts window, aligned on wall-clock time"
    )
    suppress_below: Int = Field(
        0,
        ge=0,
        le=100,
        description="report counts below this as 0 so a window cannot single out one person "
        "(0: off)",
    )


class TlsConfig(_Section):
    ca_file: Path | None = Field(
        None, description="CA certificate that signed the broker's certificate"
    )
    cert_file: Path | None = Field(None, description="client certificate (optional)")
    key_file: Path | None = Field(None, description="client private key (optional)")
    verify_hostname: Bool = Field(True, description="check the broker's certificate name; keep on")


class HomeAssistantConfig(_Section):
    enabled: Bool = Field(
        False, description="publish Home Assistant MQTT discovery for the count sensors"
    )
    prefix: str = Field("homeassistant", description="Home Assistant discovery prefix")


class MqttConfig(_Section):
    host: str = Field("localhost", min_length=1, description="broker host name or address")
    port: Int = Field(1883, ge=1, le=65535, description="broker port (8883 is usual for TLS)")
    prefix: str = Field("anoncam", pattern=TOPIC_PREFIX_PATTERN, description="topic prefix")
    username: str | None = Field(None, description="MQTT user name")
    password_file: Path | None = Field(
        None, description="file holding the MQTT password (or a systemd credential path)"
    )
    tls: TlsConfig | None = Field(None, description="TLS settings; absent means plain TCP")
    protocol: Literal["auto", "5", "3.1.1"] = Field(
        "auto", description="MQTT version; auto tries 5 then 3.1.1"
    )
    keepalive_s: Int = Field(60, ge=5, le=3600, description="MQTT keepalive")
    health_interval_s: Float = Field(
        60.0, ge=1, le=3600, description="seconds between health messages"
    )
    keep_until_subscribed: Bool = Field(
        True,
        description="MQTT 5: keep a window in the outbox while the broker answers that nobody "
        "subscribes to it, and offer it again (after a quarter of the time it has waited, "
        "0.5 s to 60 s); off: the broker drops it",
    )
    homeassistant: HomeAssistantConfig = Field(default_factory=HomeAssistantConfig)


class OutboxConfig(_Section):
    max_rows: Int = Field(
        100_000,
        ge=10,
        le=10_000_000,
        description="cap on unsent windows; beyond it the oldest are merged, never dropped",
    )
    min_free_mb: Int = Field(
        50, ge=1, le=100_000, description="merge oldest windows when free disk falls below this"
    )


class PreviewConfig(_Section):
    enabled: Bool = Field(False, description="serve the anonymized preview page")
    bind: str = Field(
        "127.0.0.1", description="address to listen on; beyond loopback a token is required"
    )
    port: Int = Field(8080, ge=1, le=65535)
    token_file: Path | None = Field(None, description="file holding the access token")


class Config(_Section):
    site: Identifier = Field("demo-site", description="store or site id, used in MQTT topics")
    device: Identifier = Field("demo-cam", description="device id, unique within the site")
    state_dir: Path = Field(Path("/var/lib/anoncam"), description="where the outbox database lives")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    source: SourceConfig = Field(default_factory=SourceConfig)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    people: PeopleConfig = Field(default_factory=PeopleConfig)
    anonymizer: AnonymizerConfig = Field(default_factory=AnonymizerConfig)
    tracker: TrackerConfig = Field(default_factory=TrackerConfig)
    counter: CounterConfig = Field(default_factory=CounterConfig)
    windows: WindowConfig = Field(default_factory=WindowConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    preview: PreviewConfig = Field(default_factory=PreviewConfig)

    @field_validator("state_dir")
    @classmethod
    def _absolute_or_relative(cls, v: Path) -> Path:
        return v.expanduser()


def _problems(err: ValidationError) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see 'anoncam config example')"
        out.append((path, msg))
    return out


def from_dict(data: dict[str, Any], *, origin: str = "config") -> Config:
    """Validate a mapping (as read from TOML) into a :class:`Config`."""
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(
            f"{origin}: {err.error_count()} problem(s)",
            problems=_problems(err),
            hint="fix each listed field, then run 'anoncam config check FILE'",
        ) from None


def read_toml(
    path: Path | str,
    *,
    what: str = "config file",
    missing_hint: str = "pass an existing file with --config",
) -> dict[str, Any]:
    """Read a TOML file; every failure is a :class:`ConfigError` naming the file and the fix."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: {what} not found", hint=missing_hint) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{p}: cannot read the {what}: {exc}", hint="check the file's permissions and encoding"
        ) from None
    # Windows editors (Notepad) save UTF-8 with a byte-order mark, which TOML does not allow;
    # it carries no meaning, so it is dropped rather than refused.
    text = text.removeprefix("\ufeff")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{p}: not valid TOML: {exc}", hint="fix the TOML syntax at the given line"
        ) from None


def load(path: Path | str) -> Config:
    """Read and validate a TOML config file. Raises :class:`ConfigError` with every problem."""
    return from_dict(read_toml(path), origin=str(path))


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` into a copy of ``base`` (used for CLI flags over a config file)."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out
