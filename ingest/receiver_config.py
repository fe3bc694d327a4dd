"""Receiver settings: limits (``FLYWHEEL_*`` variables) and bearer tokens mapped to projects."""

from __future__ import annotations

import hmac
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

MiB = 1024 * 1024
PROJECT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class ConfigError(ValueError):
    """A receiver setting is unusable; the message names the variable (never a token)."""


@dataclass(frozen=True)
class Limits:
    """Sizes, bounds and timings of one receiver; every field has a ``FLYWHEEL_*`` variable."""

    max_body_bytes: int = 64 * MiB  # as received (compressed); over it: 413
    max_decoded_bytes: int = 64 * MiB  # after gzip/deflate; over it: 413, inflation stops
    max_backlog_rows: int = 1_000_000  # acknowledged but not in Parquet; at/over it: 429
    max_backlog_bytes: int = 256 * MiB
    flush_max_age_s: float = 2.0  # new spans reach Parquet within about this
    flush_rows: int = 100_000  # or sooner, once this many rows wait
    flush_bytes: int = 128 * MiB
    decode_workers: int = field(default_factory=lambda: min(os.cpu_count() or 1, 8))
    grpc_threads: int = 16
    max_group_rows: int = 200_000  # rows per group commit (one fsync)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Limits:
        """Read ``FLYWHEEL_MAX_BODY_BYTES``, ``FLYWHEEL_FLUSH_MAX_AGE_S``, … (see ENV_VARS)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = "FLYWHEEL_" + f.name.upper()
            text = env.get(name, "").strip()
            if not text:
                continue
            try:
                values[f.name] = float(text) if f.name.endswith("_s") else int(text)
            except ValueError:
                raise ConfigError(f"{name}={text!r}: not a number") from None
        return replace(cls(), **values).validated()

    def validated(self) -> Limits:
        """Check every bound; raise ConfigError naming the bad one."""
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_s"):
                if not 0 < value < float("inf"):
                    raise ConfigError(f"FLYWHEEL_{f.name.upper()}={value}: must be above 0")
                continue
            minimum = 0 if f.name == "decode_workers" else 1
            if value < minimum:
                raise ConfigError(f"FLYWHEEL_{f.name.upper()}={value}: must be at least {minimum}")
        return self


ENV_VARS = tuple(f"FLYWHEEL_{f.name.upper()}" for f in fields(Limits))


def parse_tokens(text: str, *, what: str = "FLYWHEEL_TOKENS") -> dict[str, str]:
    """``"tokenA=projA,tokenB=projB"`` as {token: project}; errors never quote a token."""
    tokens: dict[str, str] = {}
    for number, item in enumerate(text.split(","), start=1):
        if not item.strip():
            continue
        token, sep, project = item.strip().partition("=")
        if not sep:
            raise ConfigError(f"{what}: entry {number} has no '=': want token=project")
        tokens[_check_token(token.strip(), what, number)] = check_project(
            project.strip(), what, number
        )
    return tokens


def read_tokens_file(path: Path | str) -> dict[str, str]:
    """A TOML file whose ``[tokens]`` table maps each token to its project."""
    what = f"FLYWHEEL_TOKENS_FILE {path}"
    try:
        document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what}: cannot read: {exc.__class__.__name__}") from None
    table = document.get("tokens")
    if not isinstance(table, dict):
        raise ConfigError(f'{what}: want a [tokens] table of "token" = "project"')
    tokens: dict[str, str] = {}
    for number, (token, project) in enumerate(table.items(), start=1):
        if not isinstance(project, str):
            raise ConfigError(f"{what}: entry {number}: the project must be a string")
        tokens[_check_token(token, what, number)] = check_project(project, what, number)
    return tokens


def read_tokens(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Tokens from ``FLYWHEEL_TOKENS`` and ``FLYWHEEL_TOKENS_FILE`` (both may be set)."""
    env = os.environ if environ is None else environ
    tokens = parse_tokens(env.get("FLYWHEEL_TOKENS", ""))
    if env.get("FLYWHEEL_TOKENS_FILE"):
        tokens.update(read_tokens_file(env["FLYWHEEL_TOKENS_FILE"]))
    return tokens


def _check_token(token: str, what: str, number: int) -> str:
    if not token or any(ch.isspace() for ch in token) or not token.isprintable():
        raise ConfigError(f"{what}: entry {number}: a token must be non-empty printable text")
    return token


def check_project(project: str, what: str, number: int) -> str:
    if not PROJECT_NAME.fullmatch(project):
        raise ConfigError(
            f"{what}: entry {number}: project {project!r}: use 1-64 letters, digits, '_', '.' or '-'"
        )
    return project


class TokenTable:
    """Bearer token -> project; every lookup compares against every token in constant time."""

    def __init__(self, tokens: Mapping[str, str], default_project: str) -> None:
        self._tokens = [(t.encode(), p) for t, p in tokens.items()]
        self.default_project = default_project

    @property
    def enabled(self) -> bool:
        """Whether requests must carry a token."""
        return bool(self._tokens)

    @property
    def projects(self) -> list[str]:
        """The configured projects (or the default one)."""
        if not self._tokens:
            return [self.default_project]
        return sorted({p for _, p in self._tokens})

    def project_for(self, authorization: str | None) -> str | None:
        """The project of an ``Authorization`` header value; None if auth is on and it fails."""
        if not self._tokens:
            return self.default_project
        scheme, _, credential = (authorization or "").strip().partition(" ")
        offered = credential.strip().encode() if scheme.lower() == "bearer" else b""
        found = None
        for token, project in self._tokens:  # no early exit: time does not depend on the match
            if hmac.compare_digest(offered, token) and offered:
                found = project
        return found
