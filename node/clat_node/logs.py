"""Logging: one line per event, in the sidecar's format, under the agent's own logger name."""

from __future__ import annotations

import logging

from clat_translator import logs as sidecar_logs

LOGGER_NAME = "clat-node"


def setup(level: int = logging.INFO) -> logging.Logger:
    return sidecar_logs.setup(level, LOGGER_NAME)


def get() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)
