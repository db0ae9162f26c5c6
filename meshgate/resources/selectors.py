"""Label selectors, as kubectl spells them: ``app=web,tier!=db,env in (a,b),!legacy``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_TERM = re.compile(
    r"""\s*(?:
        (?P<notexists>!\s*(?P<nkey>[^\s,=!()]+))
      | (?P<setkey>[^\s,=!()]+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)
      | (?P<key>[^\s,=!()]+)\s*(?:(?P<cmp>==|=|!=)\s*(?P<value>[^\s,=!()]*))?
    )\s*(?:,|$)""",
    re.VERBOSE,
)


class SelectorError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op in ("=", "in"):
            return present and labels[self.key] in self.values
        return not present or labels[self.key] not in self.values  # "!=", "notin"


@dataclass(frozen=True, slots=True)
class Selector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    @classmethod
    def parse(cls, text: str) -> Selector:
        text = text.strip()
        requirements: list[Requirement] = []
        pos = 0
        while pos < len(text):
            m = _TERM.match(text, pos)
            if m is None or m.end() == pos:
                raise SelectorError(f"invalid label selector at {text[pos:]!r}")
            pos = m.end()
            if m.group("notexists"):
                requirements.append(Requirement(m.group("nkey"), "!exists"))
            elif m.group("setkey"):
                values = frozenset(v.strip() for v in m.group("values").split(",") if v.strip())
                if not values:
                    raise SelectorError(f"{m.group('setkey')} {m.group('op')} (): empty value set")
                requirements.append(Requirement(m.group("setkey"), m.group("op"), values))
            elif m.group("cmp"):
                op = "!=" if m.group("cmp") == "!=" else "="
                requirements.append(Requirement(m.group("key"), op, frozenset({m.group("value")})))
            else:
                requirements.append(Requirement(m.group("key"), "exists"))
        return cls(tuple(requirements))
