"""The order nodes go through containerlab's stages, as a graph without I/O.

Each node goes create -> create-links -> configure -> healthy -> exit (``exec`` commands run
between configure and healthy, as in containerlab). A node enters a stage once its previous
stage is finished and every ``stages.<stage>.wait-for`` entry ({node, stage}) names a stage that
node has finished. Links need no ordering: the first end to reach create-links creates the pair
and parks the other end until its node gets there (containerlab's half-deployed links).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass

from meshgate.lab.errors import Violation
from meshgate.lab.model import STAGES, NodeSpec

StageKey = tuple[str, str]  # (node, stage)


@dataclass(frozen=True)
class Dependency:
    """``waiter`` enters its stage once ``on`` is finished; ``path`` is where it was written
    (empty for the implicit order of a node's own stages)."""

    waiter: StageKey
    on: StageKey
    path: str = ""


def dependencies(nodes: Mapping[str, NodeSpec]) -> list[Dependency]:
    found: list[Dependency] = []
    for name, node in nodes.items():
        for previous, stage in itertools.pairwise(STAGES):
            found.append(Dependency((name, stage), (name, previous)))
        for stage, config in node.stages.items():
            for index, wait in enumerate(config.wait_for):
                path = f"topology.nodes.{name}.stages.{stage}.wait-for[{index}]"
                found.append(Dependency((name, stage), (wait.node, wait.stage), path))
    return found


def never_exits(node: NodeSpec) -> str | None:
    """Why ``node`` never reaches its exit stage (None if it can)."""
    if not node.cmd:
        return "it has no cmd"
    if node.restart_policy in ("always", "unless-stopped"):
        return f'its restart-policy is {node.restart_policy} (set restart-policy: "no" or on-failure)'
    return None


def check(nodes: Mapping[str, NodeSpec]) -> list[Violation]:
    """Waits that can never end: on an unknown node, on the exit of a node that never exits,
    and cycles (each reported once, at a wait-for that closes it)."""
    problems: list[Violation] = []
    graph: dict[StageKey, list[Dependency]] = {}
    for dependency in dependencies(nodes):
        node, stage = dependency.on
        if node not in nodes:
            continue  # reported by the topology reader
        if stage == "exit" and (why := never_exits(nodes[node])):
            problems.append(
                Violation(dependency.path, f"waits for {node} to exit, but {node} never exits: {why}")
            )
            continue
        graph.setdefault(dependency.waiter, []).append(dependency)
    problems += _cycles(graph)
    return problems


def _cycles(graph: dict[StageKey, list[Dependency]]) -> list[Violation]:
    problems: list[Violation] = []
    state: dict[StageKey, int] = {}  # 1: on the path, 2: done
    path: list[Dependency] = []
    reported: set[frozenset[StageKey]] = set()

    def visit(key: StageKey) -> None:
        state[key] = 1
        for dependency in graph.get(key, []):
            target = dependency.on
            path.append(dependency)
            if state.get(target) == 1:
                start = next(i for i, d in enumerate(path) if d.waiter == target)
                cycle = path[start:]
                members = frozenset(d.waiter for d in cycle)
                if members not in reported:
                    reported.add(members)
                    where = next((d.path for d in reversed(cycle) if d.path), "")
                    chain = " -> ".join(f"{d.waiter[0]}:{d.waiter[1]}" for d in cycle)
                    problems.append(
                        Violation(
                            where or "topology.nodes",
                            f"wait-for cycle: {chain} -> {target[0]}:{target[1]} (nothing can start)",
                        )
                    )
            elif state.get(target) is None:
                visit(target)
            path.pop()
        state[key] = 2

    for key in list(graph):
        if state.get(key) is None:
            visit(key)
    return problems
