"""The one exception tree of anoncam.

Every error says what went wrong, where (file, field, topic) and what to do about it, and carries
the exit code the CLI returns for it (0 ok, 1 runtime failure, 2 bad config, usage or input)::

    AnoncamError                      exit 1, base of everything we raise on purpose
    ├── UsageError                    exit 2, bad command-line arguments
    ├── ConfigError                   exit 2, invalid config; lists every problem with its path
    ├── InputError                    exit 2, unreadable input (corrupt, truncated, wrong type)
    ├── ModelError                    exit 2, model missing, wrong hash, not ONNX, wrong names
    ├── SourceError                   exit 1, a frame source failed (camera missing, read error)
    ├── DetectorError                 exit 1, inference failed at run time
    ├── OutputError                   exit 1, we could not write an output (disk full, permissions)
    ├── StorageError                  exit 1, the outbox database failed
    └── BrokerError                   exit 1, MQTT connection refused, unreachable, auth failed

The CLI prints ``str(error)`` and ``error.hint``; library code raises or logs, never both.
"""

from __future__ import annotations


class AnoncamError(Exception):
    """Base class. ``hint`` tells the user what to do; ``exit_code`` is what the CLI returns."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(AnoncamError):
    exit_code = 2


class ConfigError(AnoncamError):
    """Invalid configuration. ``problems`` holds one ``(dotted.path, message)`` per problem."""

    exit_code = 2

    def __init__(
        self, message: str, *, problems: list[tuple[str, str]] | None = None, hint: str = ""
    ) -> None:
        self.problems: list[tuple[str, str]] = list(problems or [])
        if self.problems:
            lines = "\n".join(f"  {path}: {msg}" for path, msg in self.problems)
            message = f"{message}\n{lines}"
        super().__init__(message, hint=hint)


class InputError(AnoncamError):
    exit_code = 2


class ModelError(AnoncamError):
    exit_code = 2


class SourceError(AnoncamError):
    exit_code = 1


class DetectorError(AnoncamError):
    exit_code = 1


class OutputError(AnoncamError):
    exit_code = 1


class StorageError(AnoncamError):
    exit_code = 1


class BrokerError(AnoncamError):
    exit_code = 1
