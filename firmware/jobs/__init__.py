"""One module per CLI job, the work behind each command (``firmware.cli`` parses arguments and
calls these): ``blur``, ``snapshot`` (with ``overlay``, the counting line drawn for installers),
``support_bundle``, ``demo`` (with ``demo_broker``, the embedded broker when Mosquitto is
missing).
"""
