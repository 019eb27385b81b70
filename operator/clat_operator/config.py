"""The operator's settings (contract.SETTINGS), read from CLAT_OPERATOR_* env or the same flags.

Everything is validated here, once, at start: a bad setting stops the operator with one clear
line naming the setting, never later with a traceback in the middle of an admission request.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import logging
from collections.abc import Mapping
from typing import Any

from clat_operator import contract, validation

# Namespaces that are never injected, whatever the settings say.
ALWAYS_EXCLUDED_NAMESPACES = frozenset({"kube-system"})

# Keys allowed in the sidecar's ResourceRequirements (core/v1).
_RESOURCE_KEYS = frozenset({"requests", "limits", "claims"})


class ConfigError(ValueError):
    """A setting has a value the operator cannot work with (the message names it)."""


class NativeSidecar(enum.StrEnum):
    AUTO = "auto"
    ON = "on"
    OFF = "off"


class ClatMode(enum.StrEnum):
    """How opted-in pods get their CLAT (validation.MODE_VALUES; the annotation clat.io/mode)."""

    SIDECAR = "sidecar"
    NODE = "node"


class SecurityMode(enum.StrEnum):
    PRIVILEGED = "privileged"
    CAPABILITIES = "capabilities"


_PULL_POLICIES = ("Always", "IfNotPresent", "Never")
_LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
_LOG_LEVELS["error"] = logging.ERROR
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


@dataclasses.dataclass(frozen=True)
class Config:
    namespace: str = ""
    mode: ClatMode = ClatMode.SIDECAR
    node_socket_dir: str = contract.DEFAULT_NODE_SOCKET_DIR
    sidecar_image: str = contract.DEFAULT_SIDECAR_IMAGE
    sidecar_image_pull_policy: str = "IfNotPresent"
    plat_prefix: str = ""
    discover_prefix: bool = True
    mtu: int | None = None
    security_mode: SecurityMode = SecurityMode.PRIVILEGED
    native_sidecar: NativeSidecar = NativeSidecar.AUTO
    sidecar_resources: Mapping[str, Any] = dataclasses.field(
        default_factory=lambda: json.loads(contract.DEFAULT_SIDECAR_RESOURCES)
    )
    restart_missing: bool = False
    exclude_namespaces: frozenset[str] = frozenset()
    not_ready_warning_seconds: float = 120.0
    webhook_port: int = contract.WEBHOOK_PORT
    webhook_host: str = ""
    tls_cert_file: str = "/etc/clat-operator/tls/tls.crt"
    tls_key_file: str = "/etc/clat-operator/tls/tls.key"
    health_port: int = contract.HEALTH_PORT
    log_level: int = logging.INFO

    @property
    def dev_mode(self) -> bool:
        """Local development: generated certificate, operator-managed webhook configuration."""
        return bool(self.webhook_host)

    def excluded(self, namespace: str) -> bool:
        if namespace in ALWAYS_EXCLUDED_NAMESPACES or namespace in self.exclude_namespaces:
            return True
        return bool(self.namespace) and namespace == self.namespace

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Config:
        """Settings from CLAT_OPERATOR_* variables; unset ones take their defaults."""
        raw = {s.env: environ.get(s.env, s.default) for s in contract.SETTINGS}
        return cls.from_strings(raw)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Config:
        """Settings from parsed flags (whose defaults came from the environment)."""
        raw = {s.env: getattr(args, _dest(s)) for s in contract.SETTINGS}
        return cls.from_strings(raw)

    @classmethod
    def from_strings(cls, raw: Mapping[str, str]) -> Config:
        def get(env: str) -> str:
            return raw[env].strip()

        return cls(
            namespace=get("CLAT_OPERATOR_NAMESPACE"),
            mode=ClatMode(
                _choice("CLAT_OPERATOR_MODE", get("CLAT_OPERATOR_MODE"), tuple(ClatMode))
            ),
            node_socket_dir=_host_directory(
                "CLAT_OPERATOR_NODE_SOCKET_DIR", get("CLAT_OPERATOR_NODE_SOCKET_DIR")
            ),
            sidecar_image=_image(get("CLAT_OPERATOR_SIDECAR_IMAGE")),
            sidecar_image_pull_policy=_choice(
                "CLAT_OPERATOR_SIDECAR_IMAGE_PULL_POLICY",
                get("CLAT_OPERATOR_SIDECAR_IMAGE_PULL_POLICY"),
                _PULL_POLICIES,
            ),
            plat_prefix=_plat_prefix(get("CLAT_OPERATOR_PLAT_PREFIX")),
            discover_prefix=_bool(
                "CLAT_OPERATOR_DISCOVER_PREFIX", get("CLAT_OPERATOR_DISCOVER_PREFIX")
            ),
            mtu=_mtu(get("CLAT_OPERATOR_MTU")),
            security_mode=SecurityMode(
                _choice(
                    "CLAT_OPERATOR_SECURITY_MODE",
                    get("CLAT_OPERATOR_SECURITY_MODE"),
                    tuple(SecurityMode),
                )
            ),
            native_sidecar=NativeSidecar(
                _choice(
                    "CLAT_OPERATOR_NATIVE_SIDECAR",
                    get("CLAT_OPERATOR_NATIVE_SIDECAR"),
                    tuple(NativeSidecar),
                )
            ),
            sidecar_resources=_resources(get("CLAT_OPERATOR_SIDECAR_RESOURCES")),
            restart_missing=_bool(
                "CLAT_OPERATOR_RESTART_MISSING", get("CLAT_OPERATOR_RESTART_MISSING")
            ),
            exclude_namespaces=frozenset(
                ns.strip()
                for ns in get("CLAT_OPERATOR_EXCLUDE_NAMESPACES").split(",")
                if ns.strip()
            ),
            not_ready_warning_seconds=_seconds(
                "CLAT_OPERATOR_NOT_READY_WARNING_SECONDS",
                get("CLAT_OPERATOR_NOT_READY_WARNING_SECONDS"),
            ),
            webhook_port=_port("CLAT_OPERATOR_WEBHOOK_PORT", get("CLAT_OPERATOR_WEBHOOK_PORT")),
            webhook_host=get("CLAT_OPERATOR_WEBHOOK_HOST"),
            tls_cert_file=get("CLAT_OPERATOR_TLS_CERT_FILE"),
            tls_key_file=get("CLAT_OPERATOR_TLS_KEY_FILE"),
            health_port=_port("CLAT_OPERATOR_HEALTH_PORT", get("CLAT_OPERATOR_HEALTH_PORT")),
            log_level=_LOG_LEVELS[
                _choice(
                    "CLAT_OPERATOR_LOG_LEVEL",
                    get("CLAT_OPERATOR_LOG_LEVEL").lower(),
                    tuple(_LOG_LEVELS),
                )
            ],
        )

    def describe(self) -> str:
        """One log line with the effective settings (no secrets exist among them)."""
        prefix = self.plat_prefix or ("discover" if self.discover_prefix else "by-sidecar")
        parts = [
            f"namespace={self.namespace or '-'}",
            f"mode={self.mode}",
            f"image={self.sidecar_image}",
            f"plat-prefix={prefix}",
            f"mtu={self.mtu or 'auto'}",
            f"security-mode={self.security_mode}",
            *([f"node-socket-dir={self.node_socket_dir}"] if self.mode is ClatMode.NODE else []),
            f"native-sidecar={self.native_sidecar}",
            f"restart-missing={str(self.restart_missing).lower()}",
            f"exclude={','.join(sorted(self.exclude_namespaces)) or '-'}",
            f"webhook=:{self.webhook_port}"
            + (f" dev-host={self.webhook_host}" if self.dev_mode else ""),
        ]
        return " ".join(parts)


def add_arguments(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    """One flag per setting; each defaults to its env variable, then to the contract default."""
    for s in contract.SETTINGS:
        parser.add_argument(
            s.flag,
            dest=_dest(s),
            default=environ.get(s.env, s.default),
            metavar="VALUE",
            help=f"{s.help} (env {s.env}; default {s.default!r})",
        )


def _dest(setting: contract.Setting) -> str:
    return setting.env.removeprefix("CLAT_OPERATOR_").lower()


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not allowed: use one of {', '.join(allowed)}")
    return value


def _bool(name: str, value: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ConfigError(f"{name}={value!r} is not a boolean: use true or false")


def _image(value: str) -> str:
    if not value or any(ch.isspace() for ch in value):
        raise ConfigError(f"CLAT_OPERATOR_SIDECAR_IMAGE={value!r} is not an image reference")
    return value


def _host_directory(name: str, value: str) -> str:
    """An absolute, normalised path on the node (it becomes a hostPath volume's path)."""
    parts = value.split("/")
    if not value.startswith("/") or value == "/" or any(p in ("", ".", "..") for p in parts[1:]):
        raise ConfigError(
            f"{name}={value!r} is not an absolute directory path on the node "
            "(no '.', '..', '//' or trailing '/'; not '/')"
        )
    if any(ch.isspace() or ord(ch) < 32 for ch in value):
        raise ConfigError(f"{name}={value!r} contains whitespace or control characters")
    return value


def _plat_prefix(value: str) -> str:
    if not value:
        return ""
    try:
        return str(validation.plat_prefix(value))
    except ValueError as e:
        raise ConfigError(f"CLAT_OPERATOR_PLAT_PREFIX={value!r}: {e}") from None


def _mtu(value: str) -> int | None:
    if not value:
        return None
    try:
        return validation.mtu(value)
    except ValueError as e:
        raise ConfigError(f"CLAT_OPERATOR_MTU={value!r}: {e}") from None


def _port(name: str, value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise ConfigError(f"{name}={value!r} is not a TCP port (1-65535)")
    return int(value)


def _seconds(name: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0 or seconds != seconds or seconds == float("inf"):
        raise ConfigError(f"{name}={value!r} is not a positive number of seconds")
    return seconds


def _resources(value: str) -> Mapping[str, Any]:
    name = "CLAT_OPERATOR_SIDECAR_RESOURCES"
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{name} is not JSON: {e.msg} at position {e.pos}") from None
    if not isinstance(parsed, dict) or not set(parsed) <= _RESOURCE_KEYS:
        raise ConfigError(
            f"{name}={value!r} is not a ResourceRequirements object "
            f"(keys allowed: {', '.join(sorted(_RESOURCE_KEYS))})"
        )
    for key in ("requests", "limits"):
        section = parsed.get(key, {})
        ok = isinstance(section, dict) and all(
            isinstance(k, str) and isinstance(v, str | int) for k, v in section.items()
        )
        if not ok:
            raise ConfigError(f"{name}: {key!r} must map resource names to quantities")
    return parsed
