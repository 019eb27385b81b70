"""Logging: one line per event, as the sidecar logs (UTC timestamp, level, message)."""

from __future__ import annotations

import logging
import sys
import time

LOGGER_NAME = "clat-node"


class _Formatter(logging.Formatter):
    converter = staticmethod(time.gmtime)

    def __init__(self) -> None:
        super().__init__("%(asctime)s.%(msecs)03dZ %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S")


def setup(level: int = logging.INFO) -> logging.Logger:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    log = logging.getLogger(LOGGER_NAME)
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
    return log


def get() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)
