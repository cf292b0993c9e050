"""The MQTT side of the contract (paho-mqtt 2.x).

- :mod:`~firmware.mqtt.connect`: one way to build a client (TLS, credentials, protocol fallback)
  and to explain a failure;
- :mod:`~firmware.mqtt.publish`: the device's publisher (outbox drain with QoS 1, status with a
  Last Will, health, Home Assistant discovery);
- :mod:`firmware.mqtt.subscribe`: the consumer side.
"""
