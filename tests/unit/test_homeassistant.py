"""Home Assistant discovery checked against Home Assistant's own rules (issue 12, items 21, 22).

Regression: the four sensors were ``state_class: measurement`` without ``force_update``, so HA
dropped a window equal to the previous one (visitors [3, 3, 3, 2, 4, 0], 15 in all, showed 9 as
state changes) and its long-term statistics kept a mean of per-window counts instead of a sum;
and ``{{ value_json.occupancy.last }}`` rendered an empty string for a window with no frames,
which HA ignores, so the old occupancy stayed on screen while the camera saw nothing.

The rules below are read from Home Assistant's source (home-assistant/core, 2024.11 and later)
and its documentation, and each is applied to what we publish:

- R1, ``homeassistant/components/mqtt/sensor.py`` ``_PLATFORM_SCHEMA_BASE`` +
  ``MQTT_RO_SCHEMA`` + ``MQTT_ENTITY_COMMON_SCHEMA``: the keys a sensor component may carry;
  ``DISCOVERY_SCHEMA`` is built with ``extra=vol.REMOVE_EXTRA``, so a misspelt key is silently
  dropped, which is why the test insists every key is a known one.
- R2, same file, ``validate_sensor_state_and_device_class_config``: ``last_reset_value_template``
  is refused unless ``state_class`` is ``total``.
- R3, ``homeassistant/components/sensor/const.py`` ``SensorStateClass``: state classes are
  ``measurement``, ``total``, ``total_increasing`` (``measurement_angle`` since 2025.x).
- R4, ``MqttSensor._update_state``: a rendered payload equal to ``PAYLOAD_NONE`` (``"None"``)
  sets the sensor unknown; an empty payload is ignored when a numeric state is expected (a
  state class or unit is set); anything else becomes the state.
- R5, ``MqttSensor._update_last_reset``: the rendered last-reset template must parse with
  ``dt_util.parse_datetime`` (ISO 8601 with a zone), otherwise it is ignored.
- R6, ``homeassistant/core.py`` ``StateMachine.async_set``: a state equal to the previous one
  with equal attributes is not written (no event, not recorded) unless ``force_update``.
- R7, ``homeassistant/components/sensor/recorder.py`` ``compile_statistics``: for a ``total``
  sensor, each recorded state whose ``last_reset`` differs from the previous one starts a new
  cycle at 0 and adds its value to ``sum``; the first recorded state is the zero point. A
  ``measurement`` sensor gets mean/min/max and no sum.

Templates are rendered with Jinja2, the engine of HA's templates, with ``value_json`` bound to
the parsed payload as ``MqttValueTemplate.async_render_with_possible_json_value`` does.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import pytest

from firmware.config.settings import HomeAssistantConfig, MqttConfig
from firmware.count import FrameCounts
from firmware.mqtt.publish import homeassistant_discovery
from firmware.outbox import Outbox
from firmware.windows import WindowAggregator

S = 1_000_000_000
T0 = 1_795_453_200 * S  # 2026-11-23T17:00:00Z

# R1: sensor keys (sensor.py) + read-only keys (config.py MQTT_RO_SCHEMA) + entity keys
# (schemas.py MQTT_ENTITY_COMMON_SCHEMA, MQTT_AVAILABILITY_SCHEMA) + the device-discovery
# component keys (platform).
HA_SENSOR_KEYS = frozenset(
    {
        "device_class", "expire_after", "force_update", "last_reset_value_template", "name",
        "options", "suggested_display_precision", "state_class", "unit_of_measurement",
        "state_topic", "value_template", "qos", "encoding",
        "availability", "availability_mode", "availability_topic", "availability_template",
        "payload_available", "payload_not_available", "device", "enabled_by_default",
        "entity_category", "entity_picture", "icon", "json_attributes_topic",
        "json_attributes_template", "object_id", "default_entity_id", "unique_id", "platform",
    }
)  # fmt: skip
HA_STATE_CLASSES = frozenset({"measurement", "measurement_angle", "total", "total_increasing"})
PAYLOAD_NONE = "None"


def discovery() -> dict[str, Any]:
    config = MqttConfig(homeassistant=HomeAssistantConfig(enabled=True))
    _topic, body = homeassistant_discovery(config, site="store-042", device="door-1", version="t")
    return body


def render(template: str, payload: dict[str, Any]) -> str:
    env = jinja2.Environment(undefined=jinja2.Undefined)  # HA renders a missing attribute empty
    return env.from_string(template).render(value_json=json.loads(json.dumps(payload)))


def windows(tmp_path: Path, visitors: list[int], *, empty_last: bool = False) -> list[Any]:
    """Real payloads from the aggregator: one window per entry of ``visitors``."""
    with Outbox(tmp_path / "outbox.db") as ob:
        agg = WindowAggregator(ob, site="store-042", device="door-1", window_s=60)
        for i, n in enumerate(visitors):
            for k in range(10):
                fc = FrameCounts(t_ns=0, new_visitors=n if k == 0 else 0, occupancy=1)
                agg.observe(fc, T0 + i * 60 * S + k * S)
        gap = 2 if empty_last else 0
        agg.observe(FrameCounts(t_ns=0), T0 + (len(visitors) + gap) * 60 * S)
        return [json.loads(r.payload) for r in ob.pending(limit=1000)]


def sensor(body: dict[str, Any], key: str) -> dict[str, Any]:
    (found,) = [c for c in body["components"].values() if c["unique_id"].endswith("_" + key)]
    return dict(found)


def test_every_sensor_passes_home_assistants_discovery_schema() -> None:
    """R1-R3: known keys only, a valid state class, last_reset only with total."""
    for component in discovery()["components"].values():
        assert set(component) <= HA_SENSOR_KEYS
        assert component["platform"] == "sensor"
        assert component["state_class"] in HA_STATE_CLASSES
        if "last_reset_value_template" in component:
            assert component["state_class"] == "total"
        assert isinstance(component.get("force_update", False), bool)


@pytest.mark.parametrize("key", ["entries", "exits", "visitors"])
def test_per_window_counts_add_up_in_long_term_statistics(tmp_path: Path, key: str) -> None:
    """R4-R7 on the issue's run: visitors [3, 3, 3, 2, 4, 0] must all be recorded and summed."""
    counts = [3, 3, 3, 2, 4, 0]
    payloads = windows(tmp_path, counts)
    config = sensor(discovery(), key)
    assert config["state_class"] == "total" and config["force_update"] is True
    recorded: list[tuple[float, datetime]] = []
    last: tuple[str, str] | None = None
    for payload in payloads:
        state = render(config["value_template"], payload)
        assert state not in ("", PAYLOAD_NONE)
        reset_text = render(config["last_reset_value_template"], payload)
        reset = datetime.fromisoformat(reset_text)  # R5: parses, with its zone
        assert reset.tzinfo is not None
        # R6: recorded when changed, or always with force_update
        if config.get("force_update") or last != (state, reset_text):
            recorded.append((float(state), reset))
        last = (state, reset_text)
    values = [p[key] for p in payloads]
    assert len(recorded) == len(payloads)
    # R7: the first recorded state is the zero point; each new last_reset adds its value.
    total, zero, previous_reset = 0.0, None, None
    for value, reset in recorded:
        if zero is None:
            zero, previous_reset = value, reset
            continue
        assert reset != previous_reset  # every window starts a new cycle
        total += value
        previous_reset = reset
    assert total == sum(values[1:])
    if key == "visitors":
        assert values == counts


def test_occupancy_is_unknown_for_a_window_with_no_frames(tmp_path: Path) -> None:
    """R4: a window with occupancy null must make the sensor unknown ('None'), not render an
    empty string that HA ignores (which left the old occupancy on screen)."""
    payloads = windows(tmp_path, [1], empty_last=True)
    seen, blind = payloads[0], payloads[-1]
    assert seen["occupancy"] is not None and blind["occupancy"] is None
    config = sensor(discovery(), "occupancy")
    assert config["state_class"] == "measurement"  # a level, not an amount: no sum
    assert "last_reset_value_template" not in config
    assert render(config["value_template"], seen) == str(seen["occupancy"]["last"])
    assert render(config["value_template"], blind) == PAYLOAD_NONE
