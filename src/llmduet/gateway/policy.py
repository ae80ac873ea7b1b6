"""Routing policies: ordered rules over request features; the first that holds decides.

A route (the ``model`` a client asks for) has default targets and rules. A rule fires
when every condition it sets holds; it chooses targets and, when the prompt has private
data, a privacy action (else the route's ``on_pii``). The decision records the rule and
a reason in words, which is what ``duet gateway --explain`` prints and the audit log keeps.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from llmduet.config.gateway import PrivacyAction, RouteSpec, RuleSpec
from llmduet.errors import ConfigError
from llmduet.gateway.pii import TYPES


@dataclass(frozen=True, slots=True)
class Features:
    """What rules can look at, computed once per request."""

    prompt_tokens: int = 0
    pii_types: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()
    team: str | None = None
    key: str | None = None
    time_budget_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    route: str
    rule: str  # the rule's name, or "default"
    reason: str
    targets: tuple[str, ...]
    privacy_action: PrivacyAction | None  # None: no private data found
    not_fired: tuple[tuple[str, str], ...] = field(default=())  # (rule, why not), in order

    @property
    def blocked(self) -> bool:
        return self.privacy_action == "block"


def estimate_tokens(texts: Iterable[str], messages: int = 0) -> int:
    """About four characters per token, plus a few per message for the chat template:
    cheap enough for every request, and rules only need the order of magnitude."""
    return sum(len(text) for text in texts) // 4 + 4 * messages


def _check(rule: RuleSpec, features: Features) -> tuple[bool, str]:
    """Does ``rule`` hold, and why (or why not) in words."""
    reasons = []
    if rule.pii is not None or rule.pii_types:
        wanted = set(rule.pii_types or TYPES)
        found = sorted(features.pii_types & wanted)
        want_pii = rule.pii if rule.pii is not None else True
        if bool(found) != want_pii:
            return False, (
                f"no private data of {'/'.join(sorted(wanted))} found"
                if want_pii
                else f"private data found ({', '.join(found)})"
            )
        reasons.append(f"private data found ({', '.join(found)})" if found else "no private data")
    tokens = features.prompt_tokens
    if rule.min_prompt_tokens is not None:
        if tokens < rule.min_prompt_tokens:
            return False, f"about {tokens} prompt tokens < {rule.min_prompt_tokens}"
        reasons.append(f"about {tokens} prompt tokens >= {rule.min_prompt_tokens}")
    if rule.max_prompt_tokens is not None:
        if tokens > rule.max_prompt_tokens:
            return False, f"about {tokens} prompt tokens > {rule.max_prompt_tokens}"
        reasons.append(f"about {tokens} prompt tokens <= {rule.max_prompt_tokens}")
    if rule.tags:
        hits = sorted(features.tags & {tag.lower() for tag in rule.tags})
        if not hits:
            return False, f"no tag of {', '.join(rule.tags)} in x-duet-tags"
        reasons.append(f"tag {', '.join(hits)}")
    if rule.teams:
        if features.team not in rule.teams:
            return False, f"team {features.team or '(none)'} is not {', '.join(rule.teams)}"
        reasons.append(f"team {features.team}")
    if rule.keys:
        if features.key not in rule.keys:
            return False, f"key {features.key or '(none)'} is not {', '.join(rule.keys)}"
        reasons.append(f"key {features.key}")
    if rule.max_time_budget_ms is not None:
        budget = features.time_budget_ms
        if budget is None or budget > rule.max_time_budget_ms:
            got = "no time budget" if budget is None else f"time budget {budget} ms"
            return False, f"{got} > {rule.max_time_budget_ms} ms"
        reasons.append(f"time budget {budget} ms <= {rule.max_time_budget_ms} ms")
    return True, "; ".join(reasons) or "the rule sets no condition"


def chosen_targets(spec: RouteSpec) -> list[str]:
    """Every target the route or one of its rules can choose, in order, once each."""
    named = [*spec.targets, *(t for rule in spec.rules for t in rule.targets or ())]
    return list(dict.fromkeys(named))


def all_targets(spec: RouteSpec) -> list[str]:
    """:func:`chosen_targets` and the route's ``local`` list: every upstream it may use."""
    return list(dict.fromkeys([*chosen_targets(spec), *(spec.local or ())]))


class RoutePolicy:
    """One route's rules, with the locations of its targets resolved."""

    def __init__(self, name: str, spec: RouteSpec, locations: Mapping[str, str]) -> None:
        self.name = name
        self.spec = spec
        named = chosen_targets(spec)
        for target in [*named, *(spec.local or ())]:
            if target not in locations:
                raise ConfigError(
                    f"gateway.routes.{name}: unknown target '{target}' "
                    f"(upstreams: {', '.join(sorted(locations))})"
                )
        if spec.local is not None:
            local = list(spec.local)
            remote = [t for t in local if locations[t] != "local"]
            if remote:
                raise ConfigError(f"gateway.routes.{name}.local: '{remote[0]}' is external")
        else:
            local = [t for t in named if locations[t] == "local"]
            local = local or [t for t, where in locations.items() if where == "local"]
        self.local_targets = tuple(local)
        self.locations = dict(locations)
        actions = [spec.on_pii, *(rule.privacy for rule in spec.rules if rule.privacy)]
        needs_local = "route_local" in actions or spec.over_budget == "downgrade"
        if needs_local and not self.local_targets:
            raise ConfigError(
                f'gateway.routes.{name}: route_local or over_budget = "downgrade" needs a '
                'local upstream (one on 127.0.0.1, or location = "local"), and there is none'
            )
        names = [rule.name for rule in spec.rules]
        if len(set(names)) != len(names):
            raise ConfigError(f"gateway.routes.{name}: two rules share a name")
        for rule in spec.rules:
            unknown = set(rule.pii_types or ()) - set(TYPES)
            if unknown:
                raise ConfigError(
                    f"gateway.routes.{name}.rules.{rule.name}: unknown PII type "
                    f"{sorted(unknown)[0]} (known: {', '.join(TYPES)})"
                )

    def decide(self, features: Features) -> Decision:
        not_fired: list[tuple[str, str]] = []
        for rule in self.spec.rules:
            holds, why = _check(rule, features)
            if holds:
                targets = tuple(rule.targets or self.spec.targets)
                return self._with_privacy(
                    rule.name, why, targets, rule.privacy, features, not_fired
                )
            not_fired.append((rule.name, why))
        reason = "no rule fired" if self.spec.rules else "the route has no rules"
        return self._with_privacy(
            "default", reason, tuple(self.spec.targets), None, features, not_fired
        )

    def _with_privacy(
        self,
        rule: str,
        reason: str,
        targets: tuple[str, ...],
        action: PrivacyAction | None,
        features: Features,
        not_fired: list[tuple[str, str]],
    ) -> Decision:
        privacy: PrivacyAction | None = None
        if features.pii_types:
            privacy = action or self.spec.on_pii
            if privacy == "block":
                targets = ()
            elif privacy == "route_local":
                targets = tuple(t for t in targets if self.locations[t] == "local")
                targets = targets or self.local_targets
        return Decision(self.name, rule, reason, targets, privacy, tuple(not_fired))

    def downgraded(self, decision: Decision, why: str) -> Decision:
        """The same decision sent to the local targets only, saying ``why``."""
        local = tuple(t for t in decision.targets if self.locations[t] == "local")
        return replace(
            decision, reason=f"{decision.reason}; {why}", targets=local or self.local_targets
        )
