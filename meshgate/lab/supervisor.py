"""The detached process that deploys a lab and owns its nodes' processes:
``python -m meshgate.lab.supervisor STATE_FILE`` (``up`` starts it; it outlives ``up``).

It deploys the nodes through containerlab's stages (``stages``), starts each node's init and
``cmd`` (logs in ``DIR/clab-<lab>/<node>/stdout.log`` and ``stderr.log``), restarts a ``cmd`` that
exits as its restart policy says (``restart``), runs health checks (``health``) and keeps the
state file current. SIGTERM (from ``down``) stops every process it started; ``down`` deletes the
namespaces. SIGUSR1 makes it read requests (``kill_node``/``start_node``) from its control
directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO, Final

from meshgate.lab import codec, mounts, network
from meshgate.lab import state as lab_state
from meshgate.lab.health import HealthMonitor
from meshgate.lab.model import STAGES, StageCommand
from meshgate.lab.node_process import node_env, nsenter, python_env
from meshgate.lab.plan import NodePlan, Plan
from meshgate.lab.restart import Backoff, should_restart
from meshgate.lab.state import Failure, LabState, NodeState, ProcessRecord

COMMAND_TIMEOUT: Final = 120.0
INIT_DEADLINE: Final = 20.0
STOP_DEADLINE: Final = 3.0
OUTPUT_LIMIT: Final = 4000


class NodeFailed(Exception):
    def __init__(self, node: str, stage: str, message: str, output: str = "") -> None:
        super().__init__(message)
        self.failure = Failure(node=node, stage=stage, message=message, output=output[-OUTPUT_LIMIT:])


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


class Supervisor:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.state: LabState = lab_state.read(path)
        self.plan = self.state.plan
        for name in self.plan.nodes:
            self.state.nodes.setdefault(name, NodeState())
        self.finished = {(node, stage): asyncio.Event() for node in self.plan.nodes for stage in STAGES}
        self.changed = asyncio.Event()
        self.stop = asyncio.Event()
        self.link_lock = asyncio.Lock()
        self.link_ends: dict[int, set[str]] = {}
        self.inits: dict[str, asyncio.subprocess.Process] = {}
        self.cmds: dict[str, asyncio.subprocess.Process] = {}
        self.cmd_tasks: dict[str, asyncio.Task[None]] = {}
        self.health: dict[str, HealthMonitor] = {}
        self.stopped_by_user: set[str] = set()
        self.background: set[asyncio.Task[Any]] = set()
        self.dirty = asyncio.Event()

    # -- state ------------------------------------------------------------------------------

    def node(self, name: str) -> NodeState:
        return self.state.nodes[name]

    def touch(self) -> None:
        self.dirty.set()
        self.changed.set()

    async def writer(self) -> None:
        while True:
            await self.dirty.wait()
            self.dirty.clear()
            lab_state.write(self.state)
            await asyncio.sleep(0.02)

    def spawn(self, coroutine: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    async def changed_wait(self, timeout: float = 1.0) -> None:
        self.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.changed.wait(), timeout)

    # -- the run ----------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop.set)
        loop.add_signal_handler(signal.SIGINT, self.stop.set)
        loop.add_signal_handler(signal.SIGUSR1, lambda: self.spawn(self.handle_requests()))
        self.state.supervisor = ProcessRecord.of(os.getpid())
        self.state.phase = "deploying"
        lab_state.write(self.state)
        writer = self.spawn(self.writer())
        deploy = self.spawn(self.deploy())
        await self.stop.wait()
        self.state.phase = "stopping"
        lab_state.write(self.state)
        deploy.cancel()
        for task in list(self.background):
            if task is not writer:
                task.cancel()
        await asyncio.gather(*[t for t in self.background if t is not writer], return_exceptions=True)
        await self.stop_processes()
        writer.cancel()
        lab_state.write(self.state)
        return 0

    async def deploy(self) -> None:
        try:
            await asyncio.to_thread(network.create_lab_network, self.plan)
            tasks = [asyncio.ensure_future(self.lifecycle(name)) for name in self.plan.nodes]
            try:
                for finished in asyncio.as_completed(tasks):
                    await finished
            except NodeFailed as failed:
                self.fail(failed.failure)
                for task in tasks:
                    task.cancel()
                return
            if self.state.phase == "deploying":
                self.state.phase = "ready"
                self.touch()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.fail(
                Failure(
                    node="",
                    stage="deploy",
                    message=f"{type(exc).__name__}: {exc}",
                    output=traceback.format_exc(),
                )
            )

    def fail(self, failure: Failure) -> None:
        if self.state.failure is None:
            self.state.failure = failure
        self.state.phase = "failed"
        if failure.node:
            self.node(failure.node).stage = "failed"
            self.node(failure.node).detail = failure.message
        self.touch()

    # -- one node through its stages --------------------------------------------------------

    async def lifecycle(self, name: str) -> None:
        node = self.plan.nodes[name]
        await self.enter(node, "create")
        if node.startup_delay:
            await asyncio.sleep(node.startup_delay)
        await self.create(node)
        await self.finish(node, "create")
        await self.enter(node, "create-links")
        await self.attach_links(node)
        await self.finish(node, "create-links")
        await self.enter(node, "configure")
        await self.finish(node, "configure")
        self.set_stage(name, "exec")
        for command, argv in zip(node.exec, node.exec_argv, strict=True):
            await self.run_checked(node, "exec", command, argv, target="container")
        if name in self.health:
            self.health[name].count_from_here()
        await self.enter(node, "healthy")
        await self.wait_healthy(node)
        await self.finish(node, "healthy")
        self.set_stage(name, "ready")
        if self.waited_on(name, "exit") or self.commands(node, "exit"):
            await self.enter(node, "exit")
            while self.node(name).cmd_state not in ("exited", "stopped"):
                await self.changed_wait()
            await self.finish(node, "exit")
            self.set_stage(name, "exited")

    def set_stage(self, name: str, stage: str, detail: str = "") -> None:
        state = self.node(name)
        state.stage, state.detail = stage, detail
        self.touch()

    def waited_on(self, name: str, stage: str) -> bool:
        return any(
            wait.node == name and wait.stage == stage
            for node in self.plan.nodes.values()
            for config in node.stages.values()
            for wait in config.wait_for
        )

    @staticmethod
    def commands(node: NodePlan, stage: str, phase: str | None = None) -> list[StageCommand]:
        config = node.stages.get(stage)
        if config is None:
            return []
        return [c for c in config.commands if phase is None or c.phase == phase]

    async def enter(self, node: NodePlan, stage: str) -> None:
        config = node.stages.get(stage)
        waits = list(config.wait_for) if config else []
        pending = [w for w in waits if not self.finished[(w.node, w.stage)].is_set()]
        if pending:
            self.set_stage(
                node.name, "waiting", f"{stage} after " + ", ".join(f"{w.node} {w.stage}" for w in pending)
            )
            for wait in pending:
                await self.finished[(wait.node, wait.stage)].wait()
        self.set_stage(node.name, stage)
        for command in self.commands(node, stage, "on-enter"):
            await self.run_checked(node, stage, command.command, command.argv, target=command.target)

    async def finish(self, node: NodePlan, stage: str) -> None:
        for command in self.commands(node, stage, "on-exit"):
            await self.run_checked(node, stage, command.command, command.argv, target=command.target)
        self.finished[(node.name, stage)].set()

    # -- create -----------------------------------------------------------------------------

    async def create(self, node: NodePlan) -> None:
        _mkdir(node.node_dir)
        try:
            await asyncio.to_thread(network.create_namespace, node.netns)
            await asyncio.to_thread(network.attach_management, self.plan, node)
        except Exception as exc:
            raise NodeFailed(node.name, "create", f"network: {exc}") from exc
        await self.start_init(node)
        if node.cmd:
            self.cmd_tasks[node.name] = self.spawn(self.supervise_cmd(node))
            while self.node(node.name).cmd_state in ("", "starting"):
                await self.changed_wait()
        if node.healthcheck is not None:
            self.health[node.name] = HealthMonitor(node.healthcheck, started=time.monotonic())
            self.node(node.name).health = "starting"
            self.spawn(self.probe_health(node))

    def installation_paths(self) -> list[str]:
        """Where this meshgate and its Python live: node processes run them."""
        return [sys.prefix, sys.base_prefix, self.state.code_root]

    async def start_init(self, node: NodePlan) -> None:
        binds = [codec.dump(bind) for bind in node.binds]
        if not any(bind.target == "/etc/hosts" for bind in node.binds):
            hosts = Path(node.node_dir) / "hosts"
            _write_text(hosts, hosts_file(self.plan, node))
            binds.append({"source": str(hosts), "target": "/etc/hosts", "read_only": False})
        taken = {str(bind["target"]) for bind in binds}
        for path in mounts.hidden_in_node(self.installation_paths()):
            if path not in taken:  # e.g. a virtualenv or a checkout under /tmp: keep it visible
                binds.append({"source": path, "target": path, "read_only": True})
        spec = mounts.node_spec(node.hostname, binds, node.tmpfs, node.sysctls)
        log = _open_append(Path(node.node_dir) / "init.log")
        try:
            process = await asyncio.create_subprocess_exec(
                "ip", "netns", "exec", node.netns, self.state.python, "-m", "meshgate.lab.node_init",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log,
                env=python_env(self.state.python, self.state.code_root), start_new_session=True, cwd="/",
            )  # fmt: skip
        finally:
            log.close()
        self.inits[node.name] = process
        self.node(node.name).init = ProcessRecord.of(process.pid)
        self.touch()
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(json.dumps(spec).encode())
        process.stdin.close()
        try:
            line = await asyncio.wait_for(process.stdout.readline(), INIT_DEADLINE)
        except TimeoutError:
            raise NodeFailed(
                node.name, "create", f"the node's init did not get ready within {INIT_DEADLINE} s"
            ) from None
        try:
            event = json.loads(line or b"{}")
        except ValueError:
            event = {}
        if event.get("event") != "ready":
            await process.wait()
            log_tail = _tail(Path(node.node_dir) / "init.log")
            raise NodeFailed(
                node.name, "create", f"the node's mounts: {event.get('message') or 'init exited'}", log_tail
            )

    def env(self, node: NodePlan) -> dict[str, str]:
        return node_env(node.env, node.hostname, self.state.python, self.state.code_root)

    async def supervise_cmd(self, node: NodePlan) -> None:
        state = self.node(node.name)
        backoff = Backoff()
        init = self.inits[node.name]
        while True:
            state.cmd_state = "starting"
            with (
                _open_append(Path(node.node_dir) / "stdout.log") as out,
                _open_append(Path(node.node_dir) / "stderr.log") as err,
            ):
                process = await asyncio.create_subprocess_exec(
                    *nsenter(init.pid, node.cmd), stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=err,
                    env=self.env(node), start_new_session=True, cwd="/",
                )  # fmt: skip
            started = time.monotonic()
            self.cmds[node.name] = process
            state.cmd = ProcessRecord.of(process.pid)
            state.cmd_state, state.exit_code = "running", None
            if node.name in self.health and state.restarts:
                self.health[node.name].restart(started)
            self.touch()
            returncode = await process.wait()
            state.exit_code = _exit_code(returncode)
            user = node.name in self.stopped_by_user
            if not should_restart(node.restart_policy, state.exit_code, stopped_by_user=user):
                state.cmd_state = "stopped" if user else "exited"
                self.touch()
                return
            state.cmd_state = "restarting"
            self.touch()
            await asyncio.sleep(backoff.next_delay(time.monotonic() - started))
            state.restarts += 1

    # -- links ------------------------------------------------------------------------------

    async def attach_links(self, node: NodePlan) -> None:
        for link in self.plan.links:
            if node.name not in (link.a.node, link.b.node):
                continue
            async with self.link_lock:
                ends = self.link_ends.setdefault(link.index, set())
                sides = [side for side, end in (("a", link.a), ("b", link.b)) if end.node == node.name]
                for side in sides:
                    try:
                        if not ends:
                            await asyncio.to_thread(network.create_link_end, self.plan, link, node.name)
                        else:
                            await asyncio.to_thread(network.take_link_end, self.plan, link, node.name)
                    except Exception as exc:
                        raise NodeFailed(
                            node.name,
                            "create-links",
                            f"link {link.a.node}:{link.a.interface} - {link.b.node}:{link.b.interface}: {exc}",
                        ) from exc
                    ends.add(side)

    # -- commands ---------------------------------------------------------------------------

    async def run_command(
        self, node: NodePlan, argv: Sequence[str], *, target: str, timeout: float
    ) -> tuple[int | None, str]:
        """(exit code or None on timeout, combined output)."""
        if target == "host":
            command = list(argv)
            env = dict(os.environ)
            cwd = self.plan.directory
        else:
            command = nsenter(self.inits[node.name].pid, argv)
            env, cwd = self.env(node), "/"
        try:
            process = await asyncio.create_subprocess_exec(
                *command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, env=env, start_new_session=True, cwd=cwd,
            )  # fmt: skip
        except OSError as exc:
            return 127, str(exc)
        try:
            output, _ = await asyncio.wait_for(process.communicate(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            return None, f"timed out after {timeout:g} s"
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            raise
        return _exit_code(process.returncode or 0), output.decode(errors="replace")

    async def run_checked(
        self, node: NodePlan, stage: str, text: str, argv: Sequence[str], *, target: str
    ) -> None:
        code, output = await self.run_command(node, argv, target=target, timeout=COMMAND_TIMEOUT)
        where = "on the host" if target == "host" else "in the node"
        _append_text(
            Path(node.node_dir) / "exec.log",
            f"$ {text}   ({stage}, {where}) -> {'timeout' if code is None else code}\n{output}",
        )
        if code != 0:
            what = "timed out" if code is None else f"exited with {code}"
            raise NodeFailed(
                node.name,
                stage,
                f"{'exec' if stage == 'exec' else stage + ' exec'} `{text}` {where} {what}",
                output,
            )

    # -- health -----------------------------------------------------------------------------

    async def probe_health(self, node: NodePlan) -> None:
        monitor = self.health[node.name]
        state = self.node(node.name)
        check = monitor.check
        while True:
            await asyncio.sleep(max(0.0, monitor.next_probe() - time.monotonic()))
            if node.cmd and state.cmd_state in ("exited", "stopped"):
                state.health = "unhealthy"
                monitor.last_output = f"the node's cmd {state.cmd_state} (exit code {state.exit_code})"
                monitor.status = "unhealthy"
                self.touch()
                return
            code, output = await self.run_command(node, check.argv, target="container", timeout=check.timeout)
            monitor.record(
                code == 0,
                output if code is not None else f"timed out after {check.timeout:g} s",
                time.monotonic(),
            )
            state.health, state.health_output = monitor.status, monitor.last_output
            self.touch()

    async def wait_healthy(self, node: NodePlan) -> None:
        monitor = self.health.get(node.name)
        if monitor is None:
            return
        self.set_stage(node.name, "healthcheck", f"`{monitor.check.display}`")
        while monitor.status != "healthy":
            if monitor.status == "unhealthy":
                raise NodeFailed(
                    node.name, "healthy",
                    f"unhealthy: healthcheck `{monitor.check.display}` failed {monitor.failing_streak} time(s) in a row",
                    monitor.last_output,
                )  # fmt: skip
            await self.changed_wait()

    # -- requests and stopping --------------------------------------------------------------

    async def handle_requests(self) -> None:
        directory = lab_state.control_dir(self.path)
        if not directory.is_dir():
            return
        for request in sorted(directory.iterdir()):
            name, _, action = request.name.rpartition(".")
            signal_number = request.read_text().strip()
            request.unlink(missing_ok=True)
            if name not in self.plan.nodes or name not in self.inits:
                continue
            if action == "stop":
                await self.kill_node(self.plan.nodes[name], int(signal_number or signal.SIGTERM))
            elif action == "start":
                self.start_node(self.plan.nodes[name])

    async def kill_node(self, node: NodePlan, signal_number: int) -> None:
        """As ``docker kill``: every process of the node but its init gets the signal; a ``cmd``
        killed so is not restarted."""
        self.stopped_by_user.add(node.name)
        init = self.inits[node.name].pid
        pids = await asyncio.to_thread(_netns_pids, node.netns)
        for pid in pids:
            if pid != init:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal_number)
        if not node.cmd:
            self.node(node.name).cmd_state = "stopped"
            self.touch()

    def start_node(self, node: NodePlan) -> None:
        self.stopped_by_user.discard(node.name)
        task = self.cmd_tasks.get(node.name)
        if node.cmd and (task is None or task.done()):
            self.node(node.name).restarts += 1
            self.cmd_tasks[node.name] = self.spawn(self.supervise_cmd(node))
        elif not node.cmd:
            self.node(node.name).cmd_state = ""
            self.touch()

    async def stop_processes(self) -> None:
        """SIGTERM every cmd (process group) and init, STOP_DEADLINE, then SIGKILL."""
        processes = [p for p in [*self.cmds.values(), *self.inits.values()] if p.returncode is None]
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        waits = [asyncio.ensure_future(p.wait()) for p in processes]
        if waits:
            _done, pending = await asyncio.wait(waits, timeout=STOP_DEADLINE)
            for process in processes:
                if process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
            if pending:
                await asyncio.wait(pending, timeout=5)


def _netns_pids(name: str) -> list[int]:
    from meshgate.netns.namespace import Namespace

    return Namespace(name).pids()


def hosts_file(plan: Plan, node: NodePlan) -> str:
    """The node's /etc/hosts: localhost, itself, and every node's management address by name
    (containerlab adds its nodes to /etc/hosts too)."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    if node.mgmt_ipv4 is None:
        lines.append(f"127.0.1.1\t{node.hostname}")
    for other in plan.nodes.values():
        if other.mgmt_ipv4 is not None:
            names = [other.hostname] if other is node else []
            names += [n for n in (other.name, other.longname) if n not in names]
            lines.append(f"{other.mgmt_ipv4}\t{' '.join(names)}")
    return "\n".join(lines) + "\n"


def _write_text(path: Path, text: str) -> None:
    path.write_text(text)


def _mkdir(path: str) -> None:
    Path(path).mkdir(parents=True, exist_ok=True)


def _open_append(path: Path) -> BinaryIO:
    return open(path, "ab")


def _append_text(path: Path, text: str) -> None:
    with open(path, "a") as out:
        out.write(text)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def daemonize(log: Path) -> None:
    """Detach: a new session, the parent (``up``'s child) exits at once, output to ``log``."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    fd = os.open(str(log), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m meshgate.lab.supervisor STATE_FILE", file=sys.stderr)
        return 2
    path = Path(args[0])
    lab_dir = Path(lab_state.read(path).plan.lab_dir)
    lab_dir.mkdir(parents=True, exist_ok=True)
    daemonize(lab_dir / "supervisor.log")
    supervisor = Supervisor(path)
    try:
        return asyncio.run(supervisor.run())
    except Exception:
        traceback.print_exc()
        with contextlib.suppress(Exception):
            supervisor.fail(
                Failure(
                    node="",
                    stage="supervisor",
                    message="the supervisor crashed",
                    output=traceback.format_exc(),
                )
            )
            lab_state.write(supervisor.state)
        return 1


if __name__ == "__main__":
    sys.exit(main())
