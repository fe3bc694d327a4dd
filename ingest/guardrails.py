"""Guardrail results read from guardrail spans and guardrail span events, through the
conventions data file.

The ``[guardrails]`` section of ``conventions.toml`` names the source attributes of each
canonical guardrail field and maps
each provider's native verdict (``result.type`` / ``result.value``: Bedrock's
``GUARDRAIL_INTERVENED``, OpenAI Agents' ``tripwire_triggered``, Azure's
``filter_match_state``, severity scales) to one action. The OTel GenAI conventions deliberately
define no allow/deny verdict, so this table is where Flywheel decides what "triggered" means:
every action but ``pass`` (and an unknown verdict counts as an evaluation that did not trigger).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from importlib import resources
from typing import Any

CONVENTIONS_TOML = "conventions.toml"
_NEGATED = {"true": "false", "false": "true"}
#: Distinct attribute-key sets whose read plans the rules keep (then they start over).
_PLAN_CACHE_SIZE = 1024
#: (field, ((map index, source key, negate), ...)) for each field with a present source.
_ReadPlan = tuple[tuple[str, tuple[tuple[int, str, bool], ...]], ...]


@dataclass(frozen=True)
class Verdict:
    """One native verdict rule: result type and value (lower-cased) -> action."""

    type: str
    action: str
    value: str | None = None
    reason: str | None = None
    min_value: float | None = None

    def matches(self, type_: str, value: str, reason: str) -> bool:
        """Whether a native (type, value, reason) falls under this rule."""
        if type_ != self.type:
            return False
        if self.min_value is not None:
            try:
                return float(value) >= self.min_value
            except ValueError:
                return False
        if self.value is not None and value != self.value:
            return False
        return self.reason is None or self.reason in reason


@dataclass(frozen=True)
class GuardrailResult:
    """One guardrail evaluation, as the guardrails table stores it (ids and time added later)."""

    guardrail: str | None
    stage: str | None
    category: str | None
    action: str | None
    score: float | None
    policy_id: str | None
    reason: str | None
    time_ns: int
    ordinal: int


@dataclass(frozen=True)
class GuardrailRules:
    """The compiled ``[guardrails]`` section of ``conventions.toml``."""

    fields: Mapping[str, tuple[str, ...]]
    events: frozenset[str]
    actions: frozenset[str]
    stages: Mapping[str, str]
    categories: Mapping[str, str]
    verdicts: tuple[Verdict, ...]

    @cached_property
    def _sources(self) -> tuple[tuple[str, tuple[tuple[str, bool], ...]], ...]:
        """Each field's source keys, with "negate" split off the trailing ``!``."""
        return tuple(
            (name, tuple((key.rstrip("!"), key.endswith("!")) for key in keys))
            for name, keys in self.fields.items()
        )

    @cached_property
    def _plans(self) -> dict[tuple[tuple[str, ...], ...], _ReadPlan]:
        return {}

    def _plan(self, keys: tuple[tuple[str, ...], ...]) -> _ReadPlan:
        """For maps with these keys: each field's present sources, in precedence order."""
        present = [frozenset(k) for k in keys]
        plan = []
        for name, sources in self._sources:
            candidates = tuple(
                (index, key, negate)
                for key, negate in sources
                for index, map_keys in enumerate(present)
                if key in map_keys
            )
            if candidates:
                plan.append((name, candidates))
        return tuple(plan)

    def _read(self, maps: Sequence[Mapping[str, str]]) -> dict[str, str | None]:
        """Every field's value: the first source present, earlier maps first."""
        # Guardrail spans of one kind carry the same keys: which sources are present (in
        # which map) is worked out once per key set.
        keys = tuple(tuple(m) for m in maps)
        plan = self._plans.get(keys)
        if plan is None:
            if len(self._plans) >= _PLAN_CACHE_SIZE:
                self._plans.clear()
            plan = self._plans[keys] = self._plan(keys)
        out: dict[str, str | None] = dict.fromkeys(self.fields)
        for name, candidates in plan:
            for index, key, negate in candidates:
                value = maps[index][key]
                if value is not None and value != "":
                    out[name] = _NEGATED.get(value.lower()) if negate else value
                    break
        return out

    def _action(self, fields: Mapping[str, str | None]) -> str | None:
        action = fields.get("action")
        if action is not None and action.lower() in self.actions:
            return action.lower()
        type_ = (fields.get("result_type") or "").lower()
        value = (fields.get("result_value") or "").lower()
        reason = (fields.get("reason") or "").lower()
        if type_:
            for verdict in self.verdicts:
                if verdict.matches(type_, value, reason):
                    return verdict.action
        triggered = fields.get("triggered")
        if triggered is not None:
            return {"true": "block", "false": "pass"}.get(triggered.lower())
        return None

    def action_of(self, *maps: Mapping[str, str]) -> str | None:
        """The action a guardrail took, from its own attribute, a native verdict or a flag."""
        return self._action(self._read(maps))

    def result(
        self, time_ns: int, ordinal: int, *maps: Mapping[str, str], name: str | None = None
    ) -> GuardrailResult:
        """The canonical result read from attribute maps (earlier maps win)."""
        fields = self._read(maps)
        stage, category, score_text = (
            fields.get("stage"),
            fields.get("category"),
            fields.get("score"),
        )
        try:
            score = float(score_text) if score_text is not None else None
        except ValueError:
            score = None
        if category is not None:
            lowered = category.strip().lower().replace(" ", "_").replace("-", "_")
            category = self.categories.get(lowered, lowered)
        return GuardrailResult(
            guardrail=fields.get("name") or name,
            stage=self.stages.get(stage.lower(), stage.lower()) if stage else None,
            category=category,
            action=self._action(fields),
            score=score,
            policy_id=fields.get("policy_id"),
            reason=fields.get("reason"),
            time_ns=time_ns,
            ordinal=ordinal,
        )

    def results_of_span(
        self,
        *,
        is_guardrail: bool,
        name: str | None,
        start_ns: int,
        attrs: Mapping[str, str],
        events: Sequence[tuple[int, str, Mapping[str, str]]],
    ) -> list[GuardrailResult]:
        """Every guardrail result one span carries (see the data file's header)."""
        results = []
        for ordinal, (time_ns, event_name, event_attrs) in enumerate(events):
            if event_name in self.events:
                maps = (event_attrs, attrs) if is_guardrail else (event_attrs,)
                results.append(self.result(time_ns, ordinal + 1, *maps, name=name))
        if is_guardrail and not results:
            results.append(self.result(start_ns, 0, attrs, name=_component(name)))
        return results


def _component(span_name: str | None) -> str | None:
    """``apply_guardrail {component}`` (the OTel span name) -> the component."""
    if span_name and span_name.startswith("apply_guardrail "):
        return span_name.removeprefix("apply_guardrail ").strip() or span_name
    return span_name


def parse_rules(text: str) -> GuardrailRules:
    """Compile guardrail rules from the ``[guardrails]`` section of conventions TOML text."""
    document: dict[str, Any] = tomllib.loads(text)["guardrails"]
    actions = frozenset(document["actions"])
    verdicts = []
    for number, rule in enumerate(document.get("verdicts", []), start=1):
        if rule.get("action") not in actions:
            raise ValueError(
                f"{CONVENTIONS_TOML} [guardrails]: verdict {number}: "
                f"unknown action {rule.get('action')!r}"
            )
        verdicts.append(
            Verdict(
                type=rule["type"].lower(),
                action=rule["action"],
                value=rule["value"].lower() if "value" in rule else None,
                reason=rule.get("reason"),
                min_value=float(rule["min_value"]) if "min_value" in rule else None,
            )
        )
    return GuardrailRules(
        fields={k: tuple(v) for k, v in document["fields"].items()},
        events=frozenset(document["events"]),
        actions=actions,
        stages={k.lower(): v for k, v in document.get("stages", {}).items()},
        categories={k.lower(): v for k, v in document.get("categories", {}).items()},
        verdicts=tuple(verdicts),
    )


@cache
def load_rules() -> GuardrailRules:
    """The rules compiled from the packaged ``conventions.toml``."""
    text = resources.files("ingest").joinpath(CONVENTIONS_TOML).read_text(encoding="utf-8")
    return parse_rules(text)
