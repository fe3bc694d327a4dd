"""Service-level objectives as data: the SLO file (``slos.toml``) and what each SLO means.

An SLO file holds a ``target`` (the share of requests that must be good) and ``[[slo]]``
entries, each a metric (``ttft_ms``, ``tpot_ms``, ``latency_ms`` or ``error``), a limit
(``max_ms``) and optional ``routes`` / ``models`` glob patterns; ``slos.toml`` documents the
format. :mod:`analytics.goodput` judges requests against them.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args

__all__ = [
    "CALL_METRICS",
    "SLO",
    "SLOConfig",
    "SLOConfigError",
    "SLOMetric",
    "glob_to_regex",
    "load_slo_config",
    "parse_slo_config",
]

#: What an SLO measures.
SLOMetric = Literal["ttft_ms", "tpot_ms", "latency_ms", "error"]
#: Metrics judged on a request's streamed model calls (the others on the request itself).
CALL_METRICS = ("ttft_ms", "tpot_ms")
_LABELS = {"ttft_ms": "TTFT", "tpot_ms": "TPOT", "latency_ms": "Latency", "error": "No error"}


class SLOConfigError(ValueError):
    """An SLO file Flywheel cannot use; the message names the file and the entry."""


@dataclass(frozen=True)
class SLO:
    """One objective: a metric, its limit, and the routes and models it applies to."""

    name: str
    metric: SLOMetric
    max_ms: float | None = None
    routes: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        if self.metric not in get_args(SLOMetric):
            raise ValueError(f"SLO {self.name!r}: unknown metric {self.metric!r}")
        if self.metric == "error" and self.max_ms is not None:
            raise ValueError(f"SLO {self.name!r}: an error SLO takes no max_ms")
        if self.metric != "error" and (self.max_ms is None or not self.max_ms > 0):
            raise ValueError(f"SLO {self.name!r}: max_ms must be a positive number")

    @property
    def label(self) -> str:
        """The objective in a few words, e.g. ``TTFT ≤ 2,000 ms on POST /chat · gpt-4o*``."""
        text = _LABELS[self.metric]
        if self.max_ms is not None:
            text += f" ≤ {self.max_ms:,.0f} ms"
        where = [*self.routes, *self.models]
        return f"{text} on {' · '.join(where)}" if where else text


@dataclass(frozen=True)
class SLOConfig:
    """The SLOs, the good-fraction target, and where they were read from."""

    slos: tuple[SLO, ...]
    target: float
    source: str = "built-in"

    def __post_init__(self) -> None:
        if not 0 < self.target < 1:
            raise ValueError(f"target must be between 0 and 1 (exclusive), got {self.target}")
        names = [slo.name for slo in self.slos]
        if len(set(names)) != len(names):
            raise ValueError(f"SLO names must be unique, got {names}")

    @property
    def error_budget(self) -> float:
        """The share of requests allowed to be bad: 1 − target."""
        return 1.0 - self.target


_SLO_KEYS = {"name", "metric", "max_ms", "routes", "models", "description"}


def _patterns(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise SLOConfigError(f"{where}: expected a list of non-empty strings, got {value!r}")
    return tuple(value)


def parse_slo_config(text: str, source: str) -> SLOConfig:
    """Parse the TOML text of an SLO file (format in ``analytics/slos.toml``)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SLOConfigError(f"{source}: not valid TOML: {exc}") from None
    unknown = set(data) - {"schema_version", "target", "slo"}
    if unknown:
        raise SLOConfigError(f"{source}: unknown key(s) {sorted(unknown)}")
    if data.get("schema_version", 1) != 1:
        raise SLOConfigError(f"{source}: schema_version {data['schema_version']} is not 1")
    target = data.get("target")
    if not isinstance(target, int | float) or isinstance(target, bool):
        raise SLOConfigError(f"{source}: target must be a number such as 0.99")
    slos = []
    for index, entry in enumerate(data.get("slo", [])):
        where = f"{source}: [[slo]] #{index + 1}"
        if not isinstance(entry, dict):
            raise SLOConfigError(f"{where}: expected a table")
        where = f"{where} ({entry.get('name', 'unnamed')})"
        extra = set(entry) - _SLO_KEYS
        if extra:
            raise SLOConfigError(f"{where}: unknown key(s) {sorted(extra)}")
        if not isinstance(entry.get("name"), str) or not entry["name"]:
            raise SLOConfigError(f"{where}: needs a name")
        max_ms = entry.get("max_ms")
        if max_ms is not None and (not isinstance(max_ms, int | float) or isinstance(max_ms, bool)):
            raise SLOConfigError(f"{where}: max_ms must be a number")
        try:
            slos.append(
                SLO(
                    name=entry["name"],
                    metric=entry.get("metric", ""),
                    max_ms=None if max_ms is None else float(max_ms),
                    routes=_patterns(entry.get("routes", []), f"{where} routes"),
                    models=_patterns(entry.get("models", []), f"{where} models"),
                    description=str(entry.get("description", "")),
                )
            )
        except ValueError as exc:
            raise SLOConfigError(f"{source}: {exc}") from None
    try:
        return SLOConfig(slos=tuple(slos), target=float(target), source=source)
    except ValueError as exc:
        raise SLOConfigError(f"{source}: {exc}") from None


def load_slo_config(path: Path | None = None) -> SLOConfig:
    """The SLOs in ``path``, or the built-in ``analytics/slos.toml`` when no path is given."""
    if path is None:
        text = resources.files("analytics").joinpath("slos.toml").read_text(encoding="utf-8")
        return parse_slo_config(text, "analytics/slos.toml")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SLOConfigError(f"{path}: cannot read the SLO file: {exc.strerror}") from None
    return parse_slo_config(text, str(path))


def glob_to_regex(patterns: tuple[str, ...]) -> str:
    """One regular expression (RE2 syntax, matched whole) for a set of ``*``/``?`` globs.

    >>> glob_to_regex(("gpt-4o*", "POST /chat"))
    '(?:gpt\\\\-4o.*)|(?:POST\\\\ /chat)'
    """
    parts = []
    for pattern in patterns:
        escaped = re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".")
        parts.append(f"(?:{escaped})")
    return "|".join(parts)
