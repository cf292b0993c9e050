from __future__ import annotations

import paho.mqtt.client as mqtt

from tests.support.mosquitto import Broker


def test_fixture_broker_round_trip(mosquitto: Broker) -> None:
    """The shared fixture gives a broker that really accepts, routes and delivers a message."""
    got: list[bytes] = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.on_message = lambda _c, _u, m: got.append(m.payload)
    c.connect(mosquitto.host, mosquitto.port)
    c.subscribe("t/#", qos=1)
    c.loop_start()
    try:
        c.publish("t/x", b"hello", qos=1).wait_for_publish(5)
        import time

        for _ in range(100):
            if got:
                break
            time.sleep(0.05)
    finally:
        c.loop_stop()
        c.disconnect()
    assert got == [b"hello"]
