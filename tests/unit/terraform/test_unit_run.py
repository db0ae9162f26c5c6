"""The lab's stand-in for systemd (terraform/modules/meshgate-region/lab/unit-run.py): how it reads
units (templates, continuations, environment files), expands specifiers and variables as systemd
does, and runs units: ExecStartPre first, ExecStart in the background, SIGTERM to all, then
ExecStopPost; one exiting stops the others."""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "terraform" / "modules" / "meshgate-region" / "lab" / "unit-run.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("unit_run", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["unit_run"] = module
    spec.loader.exec_module(module)
    return module


ur = load()


def test_a_template_instance_is_read_from_the_template_with_its_instance(tmp_path: Path) -> None:
    (tmp_path / "proxy@.service").write_text(
        "# comment\n[Unit]\nDescription=proxy %i\nExecStart=/not/this\n\n[Service]\n; other comment\n"
        "ExecStart=/bin/proxy --config /etc/proxy-%i.yaml \\\n  --drain 30\nEnvironment=A=1\nEnvironment=B=2\n"
    )
    unit = ur.read_unit("proxy@web.service", tmp_path)
    assert unit.instance == "web"
    assert unit.all("ExecStart") == ["/bin/proxy --config /etc/proxy-%i.yaml --drain 30"]
    assert unit.all("Environment") == ["A=1", "B=2"]
    assert unit.all("ExecStartPre") == []
    with pytest.raises(ur.UnitError, match=r"cannot read unit missing\.service"):
        ur.read_unit("missing.service", tmp_path)


def test_specifiers_are_systemds() -> None:
    unit = ur.Unit("meshgate-proxy@api.service", "api")
    assert ur.specifiers("%i %I %n %N %p 100%%", unit) == (
        "api api meshgate-proxy@api.service meshgate-proxy@api meshgate-proxy 100%"
    )
    with pytest.raises(ur.UnitError, match="%h is not supported"):
        ur.specifiers("%h", unit)


def test_environment_files_then_environment_on_top_of_the_process_environment(tmp_path: Path) -> None:
    env_file = tmp_path / "x.env"
    env_file.write_text("# comment\n\nTOKEN=/etc/token\nQUOTED=\"a b\"\nSINGLE='c'\nBASE=file\n")
    unit = ur.Unit("x.service", "", {
        "EnvironmentFile": [str(env_file), f"-{tmp_path}/absent.env"], "Environment": ["'SPACED=d e' LAST=1"],
    })  # fmt: skip
    env = ur.environment(unit, {"BASE": "process", "KEPT": "yes"})
    assert env == {"BASE": "file", "KEPT": "yes", "TOKEN": "/etc/token", "QUOTED": "a b", "SINGLE": "c",
                   "SPACED": "d e", "LAST": "1"}  # fmt: skip
    required = ur.Unit("x.service", "", {"EnvironmentFile": [f"{tmp_path}/absent.env"]})
    with pytest.raises(ur.UnitError, match=r"absent\.env"):
        ur.environment(required, {})


def test_commands_expand_variables_as_systemd_does() -> None:
    unit = ur.Unit("p@web.service", "web")
    env = {"TOKEN": "/etc/meshgate/join-token", "ARGS": "--a  --b"}
    assert ur.command("/bin/x --token-file ${TOKEN} --config /etc/p-%i.yaml $ARGS 'q r' ${UNSET}x", unit, env) == (
        ["/bin/x", "--token-file", "/etc/meshgate/join-token", "--config", "/etc/p-web.yaml", "--a", "--b", "q r", "x"],
        False,
    )  # fmt: skip
    assert ur.command("-/usr/sbin/ip addr del 203.0.113.10/32 dev lo", unit, env) == (
        ["/usr/sbin/ip", "addr", "del", "203.0.113.10/32", "dev", "lo"], True,
    )  # fmt: skip
    assert ur.command("+/bin/true", unit, env) == (["/bin/true"], False)
    with pytest.raises(ur.UnitError, match="'@' prefix"):
        ur.command("@/bin/true true", unit, env)


# -- running units ----------------------------------------------------------------------------

HELPER = """
import json, os, signal, sys, time
name, out = sys.argv[1], sys.argv[2]
def stop(*_):
    open(os.path.join(out, name + ".stopped"), "w").close()
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
with open(os.path.join(out, name + ".tmp"), "w") as f:
    json.dump({"argv": sys.argv[3:], "token": os.environ.get("TOKEN")}, f)
os.rename(os.path.join(out, name + ".tmp"), os.path.join(out, name + ".started"))
if len(sys.argv) > 3 and sys.argv[3] == "exit":  # exit N [once FILE exists]
    deadline = time.monotonic() + 20
    while len(sys.argv) > 5 and not os.path.exists(sys.argv[5]) and time.monotonic() < deadline:
        time.sleep(0.01)
    sys.exit(int(sys.argv[4]))
while True:
    signal.pause()
"""


def wait_for_file(path: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.01)


RUNNERS: list[subprocess.Popen[str]] = []


@pytest.fixture
def units(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "helper.py").write_text(HELPER)
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "units").mkdir()
    (tmp_path / "x.env").write_text("TOKEN=/etc/token\n")
    yield tmp_path
    while RUNNERS:  # a failed test leaves nothing running
        runner = RUNNERS.pop()
        if runner.poll() is None:
            runner.kill()
        runner.communicate(timeout=20)


def unit(directory: Path, name: str, start: str, pre: str = "", stop_post: str = "") -> None:
    py, helper, out = sys.executable, directory / "helper.py", directory / "out"
    lines = ["[Service]", f"EnvironmentFile={directory}/x.env"]
    if pre:
        lines.append(f"ExecStartPre={pre}")
    lines.append(f"ExecStart={py} {helper} {start.replace('OUT', str(out))}")
    if stop_post:
        lines.append(f"ExecStopPost={stop_post.replace('OUT', str(out))}")
    (directory / "units" / name).write_text("\n".join(lines) + "\n")


def start(directory: Path, *names: str) -> subprocess.Popen[str]:
    runner = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--unit-dir", str(directory / "units"), *names],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    RUNNERS.append(runner)
    return runner


def finish(runner: subprocess.Popen[str]) -> tuple[int, str]:
    """Its exit status and what it wrote to stderr (pipes closed)."""
    _, err = runner.communicate(timeout=20)
    return runner.returncode, err


def test_sigterm_stops_every_unit_then_runs_their_stop_post(units: Path) -> None:
    unit(units, "a.service", "a OUT --token ${TOKEN}", pre=f"/bin/touch {units}/out/a.pre",
         stop_post="/bin/touch OUT/a.post")  # fmt: skip
    unit(units, "b@.service", "b-%i OUT", stop_post="-/bin/false")
    runner = start(units, "a.service", "b@one.service")
    out = units / "out"
    wait_for_file(out / "a.started")
    wait_for_file(out / "b-one.started")
    assert (out / "a.pre").exists()
    assert json.loads((out / "a.started").read_text()) == {
        "argv": ["--token", "/etc/token"],
        "token": "/etc/token",
    }
    runner.send_signal(signal.SIGTERM)
    assert finish(runner)[0] == 0
    assert (out / "a.stopped").exists()
    assert (out / "b-one.stopped").exists()
    assert (out / "a.post").exists()


def test_a_unit_exiting_stops_the_others_and_gives_its_status(units: Path) -> None:
    unit(units, "long.service", "long OUT")
    unit(units, "short.service", "short OUT exit 3 OUT/long.started")
    status, err = finish(start(units, "long.service", "short.service"))
    assert status == 3
    assert (units / "out" / "long.stopped").exists()
    assert "short.service exited 3: stopping the others" in err


def test_a_failing_exec_start_pre_stops_everything_unless_ignored(units: Path) -> None:
    unit(units, "first.service", "first OUT")
    # the ExecStartPre fails once the first unit is up (so that it sees the SIGTERM)
    pre = f"{sys.executable} {units}/helper.py pre {units}/out exit 1 {units}/out/first.started"
    unit(units, "failing.service", "never OUT", pre=pre)
    status, err = finish(start(units, "first.service", "failing.service"))
    assert status == 1, err
    assert (units / "out" / "first.stopped").exists()
    assert not (units / "out" / "never.started").exists()
    unit(units, "ignored.service", "ignored OUT", pre="-/bin/false")
    runner = start(units, "ignored.service")
    wait_for_file(units / "out" / "ignored.started")
    runner.send_signal(signal.SIGTERM)
    assert finish(runner)[0] == 0


def test_usage(units: Path) -> None:
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "usage" in done.stderr
    missing = subprocess.run(
        [sys.executable, str(SCRIPT), "--unit-dir", str(units / "units"), "absent.service"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert missing.returncode == 1
    assert "cannot read unit absent.service" in missing.stderr
