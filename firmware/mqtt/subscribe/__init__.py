"""The consumer side: receive count windows, validate, de-duplicate, store.

- :mod:`~firmware.mqtt.subscribe.ledger`: at-least-once made exact (duplicates, gaps, merges);
- :mod:`~firmware.mqtt.subscribe.sinks`: CSV and SQLite;
- :mod:`~firmware.mqtt.subscribe.client`: the MQTT subscriber tying them together.
"""
