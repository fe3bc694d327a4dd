"""The redaction policy: what ingest does with each kind of sensitive text, per project.

Modes: ``off`` (keep the text; the finding is still recorded), ``mask`` (a typed placeholder,
``<EMAIL_1>``, numbered per span so one address is the same placeholder wherever it occurs in
that span) and ``hash`` (``<EMAIL:3f1a9c0b2d>``, the first 10 hex of sha256 over salt and value,
so equal values can be counted without being read). Built-in default: secrets (API keys,
private keys) masked, PII kept. A policy file (``FLYWHEEL_REDACTION_FILE``) is TOML::

    [default]                 # every project without its own table
    secret = "mask"
    pii = "off"

    [projects.support]        # keys: a category (pii, secret) or a kind (email, phone, ...)
    pii = "mask"
    email = "hash"
    salt = "a-long-random-string"   # for hash mode; without it hashes of short values
                                    # (phone numbers) can be reversed by trying them all

A kind's own key wins over its category's; a project table starts from ``[default]``.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ingest.detectors import CATEGORIES, REDACTABLE_KINDS, Finding

Mode = Literal["off", "mask", "hash"]
MODES: tuple[str, ...] = ("off", "mask", "hash")
_PLACEHOLDER_NAMES: dict[str, str] = {
    "email": "EMAIL",
    "phone": "PHONE",
    "credit_card": "CARD",
    "iban": "IBAN",
    "ip_address": "IP",
    "national_id": "NATIONAL_ID",
    "api_key": "API_KEY",
    "private_key": "PRIVATE_KEY",
}


class PolicyError(ValueError):
    """A redaction policy file Flywheel cannot use; the message says where and why."""


@dataclass(frozen=True)
class ProjectPolicy:
    """One project's mode per redactable kind, and its hash salt."""

    modes: tuple[tuple[str, str], ...]
    salt: str = ""

    def mode(self, kind: str) -> str:
        """The mode for a detector kind (``off`` for kinds that are never redacted)."""
        return dict(self.modes).get(kind, "off")

    @property
    def redacted_kinds(self) -> frozenset[str]:
        """Kinds this project masks or hashes."""
        return frozenset(kind for kind, mode in self.modes if mode != "off")


def _project_policy(
    table: Mapping[str, Any], base: ProjectPolicy | None, where: str
) -> ProjectPolicy:
    modes = dict(base.modes) if base is not None else {k: "off" for k in REDACTABLE_KINDS}
    salt = base.salt if base is not None else ""
    categories = {k: v for k, v in table.items() if k in set(CATEGORIES.values())}
    kinds = {k: v for k, v in table.items() if k in REDACTABLE_KINDS}
    for key, value in table.items():
        if key == "salt":
            if not isinstance(value, str):
                raise PolicyError(f"{where}.salt: want a string")
            salt = value
        elif key not in categories and key not in kinds:
            known = ", ".join(sorted({*set(CATEGORIES.values()), *REDACTABLE_KINDS, "salt"}))
            raise PolicyError(f"{where}.{key}: unknown key (known: {known})")
        elif value not in MODES:
            raise PolicyError(f"{where}.{key} = {value!r}: want one of {', '.join(MODES)}")
    for kind in REDACTABLE_KINDS:
        if CATEGORIES[kind] in categories:
            modes[kind] = categories[CATEGORIES[kind]]
    modes.update(kinds)
    return ProjectPolicy(tuple(sorted(modes.items())), salt)


DEFAULT_PROJECT_POLICY = _project_policy({"secret": "mask", "pii": "off"}, None, "built-in")


@dataclass(frozen=True)
class RedactionPolicy:
    """The default policy and each project's own; hashable, so a worker can cache per policy."""

    default: ProjectPolicy = DEFAULT_PROJECT_POLICY
    projects: tuple[tuple[str, ProjectPolicy], ...] = field(default=())

    def for_project(self, project: str) -> ProjectPolicy:
        """The policy that applies to ``project``."""
        return dict(self.projects).get(project, self.default)

    @property
    def any_redaction(self) -> bool:
        """Whether any project masks or hashes anything."""
        return bool(self.default.redacted_kinds) or any(p.redacted_kinds for _, p in self.projects)


def parse_policy(text: str, source: str = "redaction policy") -> RedactionPolicy:
    """A policy from TOML text (see the module docstring); PolicyError names the bad key."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source}: not valid TOML: {exc}") from None
    for key in document:
        if key not in ("default", "projects"):
            raise PolicyError(
                f"{source}: unknown table [{key}] (want [default], [projects.<name>])"
            )
    default_table = document.get("default", {})
    if not isinstance(default_table, dict):
        raise PolicyError(f"{source}: [default] must be a table")
    default = _project_policy(
        {"secret": "mask", "pii": "off", **default_table}, None, f"{source}: default"
    )
    projects = document.get("projects", {})
    if not isinstance(projects, dict):
        raise PolicyError(f"{source}: [projects] must hold one table per project")
    own = []
    for name, table in sorted(projects.items()):
        if not isinstance(table, dict):
            raise PolicyError(f"{source}: projects.{name} must be a table")
        own.append((name, _project_policy(table, default, f"{source}: projects.{name}")))
    return RedactionPolicy(default, tuple(own))


def load_policy(path: Path | None) -> RedactionPolicy:
    """The policy in ``path``, or the built-in one (secrets masked) when ``path`` is None."""
    if path is None:
        return RedactionPolicy()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"FLYWHEEL_REDACTION_FILE {path}: {exc.strerror}") from None
    return parse_policy(text, f"FLYWHEEL_REDACTION_FILE {path}")


class SpanRedactor:
    """Rewrites the texts of one span under a project's policy, numbering placeholders per span."""

    def __init__(self, policy: ProjectPolicy) -> None:
        self.policy = policy
        self._numbers: dict[tuple[str, str], int] = {}
        self._per_kind: dict[str, int] = {}

    def placeholder(self, finding: Finding) -> str:
        """The text that replaces ``finding`` (the same value gets the same placeholder)."""
        name = _PLACEHOLDER_NAMES[finding.kind]
        if self.policy.mode(finding.kind) == "hash":
            digest = hashlib.sha256((self.policy.salt + finding.value).encode("utf-8")).hexdigest()
            return f"<{name}:{digest[:10]}>"
        key = (finding.kind, finding.value)
        number = self._numbers.get(key)
        if number is None:
            number = self._per_kind.get(finding.kind, 0) + 1
            self._per_kind[finding.kind] = number
            self._numbers[key] = number
        return f"<{name}_{number}>"

    def rewrite(self, text: str, findings: list[Finding]) -> str:
        """``text`` with every finding whose kind is masked or hashed replaced."""
        out = []
        cursor = 0
        for finding in findings:
            if self.policy.mode(finding.kind) == "off":
                continue
            out.append(text[cursor : finding.start])
            out.append(self.placeholder(finding))
            cursor = finding.end
        if cursor == 0:
            return text
        out.append(text[cursor:])
        return "".join(out)
