"""Parsers of setting values (``kirby.config``): each takes a variable's name and its raw text and
returns the value, or raises :class:`ConfigError` naming the variable and how to fix it."""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import re
from pathlib import Path
from urllib.parse import urlparse

from kirby.config_catalog import DEFAULT_LOG_FORMAT
from kirby.errors import ConfigError


def parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean: use true or false")


def parse_int(name: str, raw: str, minimum: int = 0) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number: use e.g. {name}=3") from None
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} must be at least {minimum}")
    return value


def optional_int(name: str, raw: str | None) -> int | None:
    return parse_int(name, raw, minimum=1) if raw not in (None, "") else None


def parse_float(name: str, raw: str, minimum: float = 0.0) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ConfigError(f"{name}={raw!r} is not a number: use e.g. {name}=0.4")
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} must be at least {minimum}")
    return value


_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(name: str, raw: str) -> int:
    """Bytes, or a number with K/M/G/T (powers of 1024; ``512M``, ``512MiB`` and ``512mb`` alike)."""
    found = re.fullmatch(r"(\d+)\s*([KMGT]?)(?:I?B)?", raw.strip().upper())
    if not found or int(found[1]) == 0:
        raise ConfigError(f"{name}={raw!r} is not a size: use bytes or e.g. {name}=512M (K, M, G: powers of 1024)")
    return int(found[1]) * _SIZE_UNITS[found[2]]


def parse_user(name: str, raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}\$?", raw):
        raise ConfigError(
            f"{name}={raw!r} is not a user name: use the name of an unprivileged system user, e.g. kirby-run"
        )
    return raw


def mask_url(raw: str) -> str:
    """``raw`` with the password of a URL replaced by ***, for error messages."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", raw)


def parse_url(name: str, raw: str, schemes: tuple[str, ...]) -> str:
    try:
        parsed = urlparse(raw)
        parsed.port  # noqa: B018 -- raises ValueError on a bad port
        valid = parsed.scheme in schemes and bool(parsed.hostname)
    except ValueError:
        valid = False
    if not valid:
        raise ConfigError(f"{name}={mask_url(raw)!r} is not a valid URL: use e.g. {schemes[0]}://127.0.0.1:port/...")
    return raw


def parse_servers(name: str, raw: str) -> str:
    for server in raw.split(","):
        host, _, port = server.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{name}={raw!r}: {server.strip()!r} is not host:port, e.g. 127.0.0.1:9092")
    return raw


def existing_file(name: str, raw: str | None, cwd: Path) -> str | None:
    """An existing file (relative to ``cwd``), as an absolute path; None when unset."""
    if not raw:
        return None
    path = cwd / Path(raw).expanduser()
    if not path.is_file():
        raise ConfigError(f"{name}={raw!r}: no such file; point it at an existing file or unset it")
    return str(path.resolve())


def parse_topic(name: str, raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", raw) or raw in (".", ".."):
        raise ConfigError(f"{name}={raw!r} is not a Kafka topic name: use letters, digits, '.', '_' and '-'")
    return raw


def parse_log_format(raw: str) -> str:
    record = logging.LogRecord("kirby", logging.INFO, __file__, 1, "message", None, None)
    try:
        logging.Formatter(raw, validate=True).format(record)
    except (ValueError, KeyError, TypeError):
        raise ConfigError(
            f"LOG_FORMAT={raw!r} is not a logging format: use e.g. LOG_FORMAT={DEFAULT_LOG_FORMAT!r}"
        ) from None
    return raw


def parse_networks(name: str, raw: str) -> tuple[str, ...]:
    """Comma-separated IP addresses or networks (``10.0.0.0/8``), normalised; () when empty."""
    networks = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ConfigError(
                f"{name}={raw!r}: {item!r} is not an IP address or network; use e.g. {name}=127.0.0.1,10.0.0.0/8"
            ) from None
    return tuple(networks)


def parse_groups(raw: str) -> tuple[str, ...]:
    """``a, b`` or, when a name holds commas (an LDAP DN), ``cn=a,dc=x; cn=b,dc=x``."""
    return tuple(part.strip() for part in raw.split(";" if ";" in raw else ",") if part.strip())


def placeholder(name: str, raw: str | None, placeholder: str, example: str) -> str | None:
    if raw is not None and placeholder not in raw:
        raise ConfigError(f"{name}={raw!r} lacks {placeholder}: use e.g. {name}={example!r}")
    return raw


def optional(parse, name: str, raw: str | None, *args):
    """``parse(name, raw, *args)``, or None when ``raw`` is unset."""
    return parse(name, raw, *args) if raw else None


def executable(name: str, raw: str | None, cwd: Path) -> str | None:
    """An existing executable file (relative to ``cwd``), as an absolute path; None when unset."""
    if not raw:
        return None
    path = cwd / Path(raw).expanduser()
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise ConfigError(
            f"{name}={raw!r}: no such executable; point it at a Python interpreter, e.g. /usr/bin/python3"
        )
    return str(path.absolute())
