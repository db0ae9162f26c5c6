"""Run one scenario of ``scenarios.yml`` against a running lab, under client load, and measure it.

1. (``pinned``) pin established flows on the scenario file's ``pin`` router;
2. start a ledger load client (``meshgate.lab.load``) in each client node's namespace, and wait
   until the workloads have received requests of this run;
3. perform the action; wait for ``converged`` (that moment is the route switch);
4. let the load run to its end; perform ``restore`` and wait for ``restored``;
5. reconcile the clients' ledgers against what every workload received (``meshgate.lab.ledger``)
   and judge the figures against ``expect`` (``expect_pinned`` when pinned).

Figures: ``action_to_converged_s``, ``restore_to_restored_s``, request counts and failures
(split at the switch), the ledger's verdict, and per client who served it.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from meshgate.lab.checks import Check
from meshgate.lab.ledger import reconcile
from meshgate.lab.nodes_protocol import LabNode, LabNodes
from meshgate.lab.scenarios import Action, Scenarios
from meshgate.netns.namespace import wait_until

RECEIVED_URL = "http://127.0.0.1:8080/_meshgate/received"
PARTITION_TABLE = "meshgate_partition"


class ScenarioLab(LabNodes, Protocol):
    """What a scenario needs from a running lab (``meshgate.lab.running.RunningLab``): what checks
    need, and stopping and starting a node."""

    def kill_node(self, node: str, /, *, signal: int) -> None: ...

    def start_node(self, node: str, /) -> None: ...


class ScenarioFailed(AssertionError):
    pass


@dataclass
class Outcome:
    name: str
    pinned: bool
    figures: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


RunCheck = Callable[[ScenarioLab, Check], float]  # seconds until it passed; raises on deadline


def run_scenario(
    lab: ScenarioLab, scenarios: Scenarios, name: str, *, run_check: RunCheck, pinned: bool = False,
    say: Callable[[str], None] = lambda _line: None,
) -> Outcome:  # fmt: skip
    scenario = scenarios.scenarios[name]
    outcome = Outcome(name, pinned)
    run = f"{name}-{secrets.token_hex(3)}"
    workloads = [n for n, node in lab.nodes.items() if _selected(node, scenarios.workloads)]
    if pinned:
        if scenarios.pin is None:
            raise ScenarioFailed("--pin: scenarios.yml has no pin router")
        _pin(lab, scenarios)
    clients: list[subprocess.Popen[str]] = []
    restored = False
    try:
        before = _received_count(lab, workloads, run)
        clients = [_start_load(lab, scenarios, client, run) for client in scenarios.load.clients]
        try:
            wait_until(lambda: _received_count(lab, workloads, run) >= before + 20, 20, 0.2)
        except TimeoutError:
            raise ScenarioFailed("timed out after 20s waiting for the load to reach the workloads") from None
        say(f"{name}: load running from {', '.join(scenarios.load.clients)}; {_describe(scenario.action)}")
        acted = time.monotonic()
        perform(lab, scenario.action, scenarios)
        switched: float | None = None
        if scenario.converged is not None:
            run_check(lab, scenario.converged)
            switched = time.monotonic()
            outcome.figures["action_to_converged_s"] = round(switched - acted, 3)
            say(f"{name}: converged after {switched - acted:.2f}s")
        sent = [record for proc in clients for record in _ledger(proc, scenarios.load.seconds + 30)]
        if scenario.restore is not None:
            restoring = time.monotonic()
            perform(lab, scenario.restore, scenarios)
            if scenario.restored is not None:
                run_check(lab, scenario.restored)
                outcome.figures["restore_to_restored_s"] = round(time.monotonic() - restoring, 3)
            restored = True
        received = [r for node in workloads for r in _received(lab, node)]
    finally:
        for proc in clients:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if pinned:
            _unpin(lab, scenarios)
        if scenario.restore is not None and not restored:
            try:
                perform(lab, scenario.restore, scenarios)
            except Exception as exc:  # report the first failure, not this one
                say(f"{name}: restore after a failure failed too: {exc}")
    result = reconcile(sent, received, run=run, switched_at=switched)
    outcome.figures.update(result.figures())
    expect = scenario.expect_pinned if pinned else scenario.expect
    if expect.get("ledger") == "holds" and not result.holds:
        outcome.problems.append(f"the ledger does not hold: {json.dumps(result.figures()['examples'])}")
    for key in ("failed", "failed_after_switch"):
        if key in expect and outcome.figures[key] > expect[key]:
            outcome.problems.append(f"{key}: {outcome.figures[key]} (at most {expect[key]} expected)")
    return outcome


def perform(lab: ScenarioLab, action: Action, scenarios: Scenarios) -> None:
    import signal

    if action.kind in ("kill", "stop"):
        for node in action.nodes:
            lab.kill_node(node, signal=signal.SIGKILL if action.kind == "kill" else signal.SIGTERM)
    elif action.kind == "start":
        for node in action.nodes:
            lab.start_node(node)
    elif action.kind in ("drain", "undrain"):
        argv = ["meshgate", "edge", action.kind, action.nodes[0]]
        if action.kind == "drain":
            argv += ["--reason", "lab scenario"]
        done = lab.exec(_global_node(lab), argv, timeout=30)
        if done.returncode != 0:
            raise ScenarioFailed(f"meshgate edge {action.kind}: {done.stderr.strip() or done.stdout.strip()}")
    elif action.kind == "partition":
        assert action.between is not None
        a, b = action.between
        ruleset = (
            f"table inet {PARTITION_TABLE} {{\n  chain forward {{\n"
            "    type filter hook forward priority filter - 10; policy accept;\n"
            f"    ip saddr {a} ip daddr {b} drop\n    ip saddr {b} ip daddr {a} drop\n  }}\n}}\n"
        )
        done = lab.exec(action.nodes[0], ["nft", "-f", "-"], input=ruleset)
        if done.returncode != 0:
            raise ScenarioFailed(f"partition on {action.nodes[0]}: {done.stderr.strip()}")
    elif action.kind == "heal":
        lab.exec(action.nodes[0], ["nft", "delete", "table", "inet", PARTITION_TABLE])
    else:  # pragma: no cover - the parser admits only the kinds above
        raise ScenarioFailed(f"unknown action {action.kind}")


def _describe(action: Action) -> str:
    if action.kind == "partition" and action.between is not None:
        return f"partition on {action.nodes[0]} between {' and '.join(action.between)}"
    return f"{action.kind} {', '.join(action.nodes)}"


def _selected(node: LabNode, selector: Mapping[str, str]) -> bool:
    return all(node.labels.get(k) == v for k, v in selector.items())


def _global_node(lab: ScenarioLab) -> str:
    for name, node in lab.nodes.items():
        if _selected(node, {"role": "global-cp"}):
            return name
    raise ScenarioFailed("no node labelled role: global-cp to run meshgate edge drain from")


def _start_load(lab: ScenarioLab, scenarios: Scenarios, client: str, run: str) -> subprocess.Popen[str]:
    load = scenarios.load
    argv = [
        "ip", "netns", "exec", lab.netns(client), sys.executable, "-m", "meshgate.lab.load",
        "--url", load.url, "--host", load.host, "--threads", str(load.threads),
        "--seconds", str(load.seconds), "--method", load.method, "--run", f"{run}-{client}",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    if not first.startswith("{"):
        proc.kill()
        _out, err = proc.communicate()
        raise ScenarioFailed(f"load client in {client} did not start: {err.strip()}")
    return proc


def _ledger(proc: subprocess.Popen[str], timeout: float) -> list[dict[str, Any]]:
    out, err = proc.communicate(timeout=timeout)
    lines = out.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise ScenarioFailed(f"load client failed ({proc.returncode}): {err.strip()[-500:]}")
    records: list[dict[str, Any]] = json.loads(lines[-1])["requests"]
    return records


def _received(lab: ScenarioLab, node: str) -> list[dict[str, Any]]:
    done = lab.exec(node, ["curl", "-sf", "--max-time", "10", RECEIVED_URL], timeout=20)
    if done.returncode != 0:
        raise ScenarioFailed(f"{node}: could not read what its workload received ({done.returncode})")
    records: list[dict[str, Any]] = json.loads(done.stdout)
    return records


def _received_count(lab: ScenarioLab, workloads: list[str], run: str) -> int:
    total = 0
    for node in workloads:
        try:
            total += sum(1 for r in _received(lab, node) if str(r.get("tag", "")).startswith(run))
        except ScenarioFailed:
            continue
    return total


def _pin(lab: ScenarioLab, scenarios: Scenarios) -> None:
    from meshgate.lab.pinning import pin_in_node

    assert scenarios.pin is not None
    pin_in_node(lab, scenarios.pin.node, scenarios.pin.next_hops, [scenarios.pin.prefix])


def _unpin(lab: ScenarioLab, scenarios: Scenarios) -> None:
    from meshgate.lab.pinning import unpin_in_node

    assert scenarios.pin is not None
    unpin_in_node(lab, scenarios.pin.node)
