"""The host the camera runs on, seen through one seam (:class:`~firmware.device.host.Host`), and
the parsers of what its tools print (vcgencmd, sysfs), shared by health and diagnostics."""
