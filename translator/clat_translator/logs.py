"""Logging: one line per event, `key=value` fields, readable in `kubectl logs`."""

from __future__ import annotations

import logging
import sys
import time

LOGGER_NAME = "clat-translator"


class _Formatter(logging.Formatter):
    converter = staticmethod(time.gmtime)

    def __init__(self) -> None:
        super().__init__("%(asctime)s.%(msecs)03dZ %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S")


def setup(level: int = logging.INFO, name: str = LOGGER_NAME) -> logging.Logger:
    """Logger `name` writes one line per event to stderr (the node agent uses its own name)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    log = logging.getLogger(name)
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
    return log


def get() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)
