"""Settings: one frozen object read from the environment (``FLYWHEEL_*``), passed explicitly."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from app.passwords import PasswordHashError, parse_hash

_PROJECT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class SettingsError(ValueError):
    """A setting has a value Flywheel cannot use; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """Where the lake lives, which project data lands in by default, and the user's own
    price, SLO, redaction policy and alert rule files (``None``: the built-in ones)."""

    data_dir: Path = Path("flywheel-data")
    project: str = "default"
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 8501
    price_file: Path | None = None
    slo_file: Path | None = None
    redaction_file: Path | None = None
    alerts_file: Path | None = None
    dashboard_password_hash: str | None = None
    #: ``clickhouse://user:pass@host:8123/db``: read (and, for ``serve``, write) ClickHouse
    #: instead of the Parquet lake; the data folder then holds only the log and caches.
    store: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read ``FLYWHEEL_DATA_DIR``, ``FLYWHEEL_PROJECT``, ``FLYWHEEL_DASHBOARD_HOST``/``_PORT``,
        ``FLYWHEEL_PRICE_FILE``, ``FLYWHEEL_SLO_FILE``, ``FLYWHEEL_REDACTION_FILE``,
        ``FLYWHEEL_ALERTS_FILE``, ``FLYWHEEL_DASHBOARD_PASSWORD_HASH`` and ``FLYWHEEL_STORE``."""
        env = os.environ if environ is None else environ
        settings = cls()
        if env.get("FLYWHEEL_DATA_DIR"):
            settings = replace(settings, data_dir=Path(env["FLYWHEEL_DATA_DIR"]))
        if env.get("FLYWHEEL_PROJECT"):
            settings = replace(settings, project=env["FLYWHEEL_PROJECT"])
        if env.get("FLYWHEEL_DASHBOARD_HOST"):
            settings = replace(settings, dashboard_host=env["FLYWHEEL_DASHBOARD_HOST"])
        if env.get("FLYWHEEL_DASHBOARD_PORT"):
            settings = replace(
                settings,
                dashboard_port=_port(env["FLYWHEEL_DASHBOARD_PORT"], "FLYWHEEL_DASHBOARD_PORT"),
            )
        if env.get("FLYWHEEL_PRICE_FILE"):
            settings = replace(settings, price_file=Path(env["FLYWHEEL_PRICE_FILE"]))
        if env.get("FLYWHEEL_SLO_FILE"):
            settings = replace(settings, slo_file=Path(env["FLYWHEEL_SLO_FILE"]))
        if env.get("FLYWHEEL_REDACTION_FILE"):
            settings = replace(settings, redaction_file=Path(env["FLYWHEEL_REDACTION_FILE"]))
        if env.get("FLYWHEEL_ALERTS_FILE"):
            settings = replace(settings, alerts_file=Path(env["FLYWHEEL_ALERTS_FILE"]))
        if env.get("FLYWHEEL_STORE"):
            settings = replace(settings, store=env["FLYWHEEL_STORE"].strip())
        if env.get("FLYWHEEL_DASHBOARD_PASSWORD_HASH"):
            settings = replace(
                settings, dashboard_password_hash=env["FLYWHEEL_DASHBOARD_PASSWORD_HASH"].strip()
            )
        return settings.validated()

    @classmethod
    def from_args(cls, args: Any, **options: Path | str | None) -> Settings:
        """The environment's settings (:meth:`from_env`) with a command's ``--data-dir`` and
        ``--project`` over them, and each of ``options`` that is set (``slo_file=…``),
        validated."""
        data_dir = getattr(args, "data_dir", None)
        values = {
            "data_dir": Path(data_dir) if data_dir else None,
            "project": getattr(args, "project", None),
            "store": getattr(args, "store", None),
            **options,
        }
        settings = cls.from_env()
        return replace(settings, **{k: v for k, v in values.items() if v}).validated()

    def validated(self) -> Settings:
        """Check every field; raise SettingsError naming the bad one."""
        if not _PROJECT.fullmatch(self.project):
            raise SettingsError(
                f"FLYWHEEL_PROJECT / --project {self.project!r}: use 1-64 letters, digits, '_', '.' or '-'"
            )
        if self.data_dir.exists() and not self.data_dir.is_dir():
            raise SettingsError(
                f"FLYWHEEL_DATA_DIR / --data-dir {self.data_dir}: exists and is not a folder"
            )
        for name, path in (
            ("FLYWHEEL_PRICE_FILE", self.price_file),
            ("FLYWHEEL_SLO_FILE / --slo-file", self.slo_file),
            ("FLYWHEEL_REDACTION_FILE", self.redaction_file),
            ("FLYWHEEL_ALERTS_FILE / --rules", self.alerts_file),
        ):
            if path is not None and not path.is_file():
                raise SettingsError(f"{name} {path}: no such file")
        if self.store is not None:
            from store.clickhouse.connect import parse_store_url

            try:
                parse_store_url(self.store)
            except ValueError as exc:
                raise SettingsError(f"FLYWHEEL_STORE / --store: {exc}") from None
        if self.dashboard_password_hash is not None:
            try:
                parse_hash(self.dashboard_password_hash)
            except PasswordHashError as exc:
                raise SettingsError(f"FLYWHEEL_DASHBOARD_PASSWORD_HASH: {exc}") from None
        return self


def _port(text: str, name: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise SettingsError(f"{name}={text!r}: not a port number") from None
    if not 0 < port < 65536:
        raise SettingsError(f"{name}={port}: a port is 1-65535")
    return port
