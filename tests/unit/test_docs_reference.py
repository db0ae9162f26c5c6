"""The user docs against the code: they fail here when one drifts from the other.

- ``docs/reference/resources.md``: a section per registered kind, every field of its spec (nested
  ones by dotted path, list items as ``[]``) in its tables, no field that does not exist, and
  the defaults the model declares.
- ``docs/reference/cli.md``: a section per click command path, every option and argument
  mentioned in it, option defaults as click declares them.
- Every ``meshgate ...`` line in a ``sh``/``console`` block of ``docs/`` parses against the real
  click tree (click's own parser and context; nothing runs).
- Every ``yaml`` block of ``docs/`` with an ``apiVersion`` validates as ``meshgate apply
  --dry-run`` does on the server (``ResourceService.apply(dry_run=True)`` on an in-process SQLite
  store holding the demo's resources and ``examples/``); zone-reported and derived kinds, which
  the API refuses to write, go through the same document validation. ```` ```yaml invalid ````
  blocks must be refused, with every message quoted on their page. ```` ```yaml proxy-local ````,
  ``proxy-ingress`` and ``edge-config`` blocks are checked by the proxy's and edge's own parsers.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import pytest
from pydantic.fields import FieldInfo

from edge import config as edge_config
from global_cp.errors import PermissionDenied
from global_cp.service import ResourceService
from meshgate.cli.main import cli
from meshgate.demo.resources import documents as demo_documents
from meshgate.resources.documents import parse_text
from meshgate.resources.kinds import REGISTRY
from meshgate.resources.kinds.mesh import MeshSpec
from meshgate.resources.model import Resource, Spec
from meshgate.resources.registry import KindDescriptor, Owner
from meshgate.resources.validation import parse_documents
from meshgate.resources.violations import ValidationFailed
from meshgate.store.mirror import StoreMirror
from meshgate.store.sqlite import SqliteStore
from zones import config as proxy_config

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
RESOURCES = DOCS / "reference" / "resources.md"
CLI = DOCS / "reference" / "cli.md"

# -- Markdown, read just enough ----------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    info: tuple[str, ...]  # the fence's info string, split: ("yaml", "invalid")
    text: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _fence(line: str) -> bool:
    return line.lstrip(" ").startswith("```")


def _lines_outside_code(text: str) -> Iterator[tuple[int, str]]:
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if _fence(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def code_blocks(path: Path) -> list[Block]:
    """Fenced blocks, list-indented ones too (their indentation removed)."""
    blocks: list[Block] = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        if _fence(lines[i]):
            indent = len(lines[i]) - len(lines[i].lstrip(" "))
            start, info = i + 1, tuple(lines[i].strip()[3:].split())
            body: list[str] = []
            i += 1
            while i < len(lines) and not _fence(lines[i]):
                body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i].lstrip(" "))
                i += 1
            blocks.append(Block(path, start, info, "\n".join(body) + "\n"))
        i += 1
    return blocks


def sections(path: Path) -> dict[str, str]:
    """Heading text (backticks removed) to the section under it, down to the next heading of
    the same or a higher level; code blocks count as section text."""
    text = path.read_text()
    lines = text.splitlines()
    headings = [
        (number, len(m.group(1)), m.group(2).replace("`", "").strip())
        for number, line in _lines_outside_code(text)
        if (m := re.match(r"^(#{1,6})\s+(.*)$", line))
    ]
    out: dict[str, str] = {}
    for i, (number, level, title) in enumerate(headings):
        end = next((n for n, lv, _t in headings[i + 1 :] if lv <= level), len(lines) + 1)
        out[title] = "\n".join(lines[number : end - 1])
    return out


def table_rows(section: str) -> list[list[str]]:
    rows = []
    for line in section.splitlines():
        if line.startswith("|") and not re.match(r"^\|\s*-", line):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            rows.append(cells)
    return rows


def all_docs() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


# -- resources.md --------------------------------------------------------------------------------


def _models_in(annotation: Any) -> list[tuple[type[Spec], str]]:
    """Spec models inside a field's type, with the path suffix that reaches them ("[]" per list)."""
    if isinstance(annotation, type) and issubclass(annotation, Spec):
        return [(annotation, "")]
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is list:
        return [(model, "[]" + suffix) for model, suffix in _models_in(args[0])]
    if origin is typing.Annotated:
        return _models_in(args[0])
    if origin in (typing.Union, types.UnionType):
        return [found for arg in args for found in _models_in(arg)]
    return []


def spec_fields(model: type[Spec], prefix: str = "") -> dict[str, FieldInfo]:
    """Every field of a spec by the path the docs use: ``bgp.neighbors[].peerASN``."""
    out: dict[str, FieldInfo] = {}
    for name, info in model.model_fields.items():
        path = prefix + (info.alias or name)
        out[path] = info
        for inner, suffix in _models_in(info.annotation):
            out.update(spec_fields(inner, f"{path}{suffix}."))
    return out


def expected_default(info: FieldInfo) -> str | None:
    """What the default column must say, or None when the page may say it its own way."""
    if info.is_required():
        return "required"
    if info.default_factory is not None:
        value: Any = info.default_factory()  # type: ignore[call-arg]
        return f"`{json.dumps(value)}`" if isinstance(value, list) else None
    value = info.default
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f"`{value}`" if value else '`""`'
    if isinstance(value, int | float):
        return f"`{value}`"
    return None  # a nested model's defaults are listed field by field


KINDS = sorted(REGISTRY, key=lambda d: d.kind)


@pytest.mark.parametrize("descriptor", KINDS, ids=lambda d: d.kind)
def test_every_kind_has_a_section_with_every_field(descriptor: KindDescriptor) -> None:
    section = sections(RESOURCES).get(descriptor.kind)
    assert section is not None, f"{RESOURCES.name} has no section '{descriptor.kind}'"
    fields = spec_fields(descriptor.spec_type)
    documented: dict[str, list[str]] = {}
    for cells in table_rows(section):
        m = re.fullmatch(r"`([^`]+)`", cells[0]) if cells else None
        if m:
            documented[m.group(1)] = cells
    missing = sorted(set(fields) - set(documented))
    unknown = sorted(set(documented) - set(fields))
    assert not missing, f"{descriptor.kind}: fields not documented: {missing}"
    assert not unknown, f"{descriptor.kind}: documented fields that do not exist: {unknown}"
    wrong = []
    for path, info in fields.items():
        want = expected_default(info)
        cells = documented[path]
        default_cell = cells[2] if len(cells) > 2 else ""
        if want is not None and want not in default_cell:
            wrong.append(f"{path}: default column says {default_cell!r}, the model says {want}")
    assert not wrong, f"{descriptor.kind}: " + "; ".join(wrong)


def test_resources_page_names_no_unknown_kind() -> None:
    known = {d.kind for d in REGISTRY}
    headed = set(sections(RESOURCES))
    stray = sorted(title for title in headed if re.fullmatch(r"[A-Z][A-Za-z]+", title) and title not in known)
    assert not stray, f"{RESOURCES.name} has sections for kinds the code does not register: {stray}"


# -- cli.md --------------------------------------------------------------------------------------


def _subcommands(group: click.Group, ctx: click.Context) -> Iterator[tuple[str, click.Command]]:
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
        yield name, command


def command_paths() -> list[tuple[str, click.Command]]:
    out: list[tuple[str, click.Command]] = []

    def walk(command: click.Command, path: list[str], parent: click.Context | None) -> None:
        out.append((" ".join(path), command))
        if isinstance(command, click.Group):
            ctx = click.Context(command, info_name=path[-1], parent=parent)
            for name, sub in _subcommands(command, ctx):
                walk(sub, [*path, name], ctx)

    walk(cli, ["meshgate"], None)
    return out


COMMANDS = command_paths()


def _default_forms(value: object) -> list[str]:
    if value == "":
        return ['`""`']
    if isinstance(value, float) and value.is_integer():
        return [f"`{value}`", f"`{int(value)}`"]
    return [f"`{value}`"]


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[p for p, _c in COMMANDS])
def test_every_command_has_a_section_with_every_option(path: str, command: click.Command) -> None:
    section = sections(CLI).get(path)
    assert section is not None, f"{CLI.name} has no section '{path}'"
    missing = []
    wrong = []
    for param in command.params:
        if isinstance(param, click.Argument):
            names = [param.human_readable_name]
        else:
            names = [*param.opts, *param.secondary_opts]
        missing += [name for name in names if f"`{name}`" not in section]
        default = param.default
        if (
            isinstance(param, click.Option)
            and not param.is_flag
            and not param.multiple
            and isinstance(default, str | int | float)
            and not isinstance(default, bool)
        ):
            flag = max(param.opts, key=len)
            rows = [" | ".join(r) for r in table_rows(section) if f"`{flag}`" in " ".join(r)]
            if not any(form in row for row in rows for form in _default_forms(default)):
                wrong.append(f"{flag} defaults to {default!r}")
    assert not missing, f"{path}: options or arguments not documented: {missing}"
    assert not wrong, f"{path}: defaults not shown in its option table: {wrong}"


def test_cli_page_names_no_unknown_command() -> None:
    known = {p for p, _c in COMMANDS}
    stray = sorted(t for t in sections(CLI) if t.startswith("meshgate") and t not in known)
    assert not stray, f"{CLI.name} has sections for commands that do not exist: {stray}"


# -- command lines in code blocks ----------------------------------------------------------------

SEPARATORS = {";", "&&", "||", "|", "&"}
REDIRECTIONS = {">", ">>", "<", ">&", "&>", "<&", ">|"}
PREFIXES = {"sudo", "time", "setsid", "exec", "nohup"}


def command_lines(block: Block) -> list[str]:
    """Shell command lines of a block: every line of ``sh`` (comments and continuations handled
    by shlex), the ``$ `` lines of ``console``."""
    lines = block.text.splitlines()
    if block.info[:1] == ("console",):
        out: list[str] = []
        for line in lines:
            if line.startswith("$ "):
                out.append(line[2:])
            elif out and out[-1].endswith("\\"):
                out[-1] = out[-1][:-1] + " " + line
        return out
    return block.text.replace("\\\n", " ").splitlines()


def meshgate_invocations(line: str) -> list[list[str]]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    segments: list[list[str]] = [[]]
    tokens = list(lexer)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token in SEPARATORS or token == "\n":
            segments.append([])
        elif token in REDIRECTIONS:
            i += 1  # and its target
        elif token.isdigit() and i + 1 < len(tokens) and tokens[i + 1] in REDIRECTIONS:
            pass  # 2>&1: the descriptor
        else:
            segments[-1].append(token)
        i += 1
    out = []
    for words in segments:
        while words and (words[0] in PREFIXES or re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0])):
            words = words[1:]
        if words and (words[0] == "meshgate" or words[0].endswith("/meshgate")):
            out.append(words[1:])
    return out


def _parse_only(command: click.Command) -> click.Command:
    """The command with file and path parameters taken as plain strings: a line in the docs
    names files on the reader's machine, not on this one."""
    twin = copy.copy(command)
    params = []
    for param in command.params:
        if isinstance(param.type, click.Path | click.File):
            param = copy.copy(param)
            param.type = click.STRING
        params.append(param)
    twin.params = params
    return twin


def check_invocation(args: list[str]) -> list[str]:
    """Problems with ``meshgate ARGS`` as click would parse it (nothing is invoked)."""
    command: click.Command = cli
    ctx = click.Context(cli, info_name="meshgate")
    path = ["meshgate"]
    while isinstance(command, click.Group):
        own = [o for p in command.params if isinstance(p, click.Option) for o in p.opts]
        if args and args[0] in (*own, "-h", "--help"):
            return []  # --version, --help: eager, they exit
        if not args:
            return [f"{' '.join(path)}: no subcommand"]
        sub = command.get_command(ctx, args[0])
        if sub is None:
            return [f"{' '.join(path)}: no command {args[0]!r}"]
        path.append(args[0])
        ctx = click.Context(sub, info_name=args[0], parent=ctx)
        command, args = sub, args[1:]
    assert ctx.parent is not None
    try:
        leaf = _parse_only(command).make_context(path[-1], list(args), parent=ctx.parent)
    except click.exceptions.Exit:
        return []
    except click.ClickException as exc:
        return [f"{' '.join(path)}: {exc.format_message()}"]
    problems = []
    for value in leaf.params.values():  # `meshgate lab exec DIR NODE -- meshgate ...`
        if isinstance(value, tuple) and "meshgate" in value:
            problems += check_invocation(list(value[value.index("meshgate") + 1 :]))
    return problems


def shell_blocks() -> list[Block]:
    return [b for p in all_docs() for b in code_blocks(p) if b.info[:1] in (("sh",), ("console",))]


def test_command_lines_in_the_docs_are_real_commands() -> None:
    problems = []
    checked = 0
    for block in shell_blocks():
        for line in command_lines(block):
            for args in meshgate_invocations(line):
                checked += 1
                problems += [
                    f"{block.where}: meshgate {shlex.join(args)}: {p}" for p in check_invocation(args)
                ]
    assert checked > 50, f"only {checked} meshgate command lines found in docs/"
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("meshgate get zones -o wide", "'wide' is not one of"),
        ("meshgate edge drain --reason x", "Missing argument 'NAME'"),
        ("meshgate token create --role zone --zone a --forever", "No such option"),
        ("meshgate zones get", "no command 'zones'"),
        ("meshgate lab exec labs/two-region global -- meshgate get zones --wide", "No such option"),
    ],
)
def test_a_wrong_command_line_is_caught(line: str, problem: str) -> None:
    (args,) = meshgate_invocations(line)
    assert any(problem in p for p in check_invocation(args))


def test_shell_plumbing_is_not_taken_for_arguments() -> None:
    line = "MESHGATE_SERVER=http://x:5680 meshgate get zones 2>&1 | grep eu && sudo meshgate demo --once &"
    assert meshgate_invocations(line) == [["get", "zones"], ["demo", "--once"]]


# -- YAML examples -------------------------------------------------------------------------------


def yaml_blocks() -> list[Block]:
    return [b for p in all_docs() for b in code_blocks(p) if b.info[:1] in (("yaml",), ("yml",))]


async def _service(tmp_path: Path) -> tuple[ResourceService, SqliteStore, StoreMirror]:
    """The global CP's write path on a store holding the demo's resources and examples/."""
    store = await SqliteStore.open(tmp_path / "store.db")
    mirror = StoreMirror(store)
    await mirror.start()
    # The default mesh, written as the global CP's bootstrap writes it (straight to the store).
    await store.put(Resource("Mesh", "default", MeshSpec(trust_domain="meshgate.local")))
    service = ResourceService(store, mirror)
    await service.apply(demo_documents(datetime.now(UTC)))
    examples: list[Any] = []
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        examples += parse_text(path.read_text())
    await service.apply(examples)
    return service, store, mirror


async def _validate(service: ResourceService, docs: list[Any]) -> None:
    """As ``meshgate apply --dry-run`` would, then for real: a reader following the page has
    what the page applied so far. Kinds the API refuses to write go through the same document
    validation only."""
    kinds = {k.kind: k for k in REGISTRY}
    owners = {
        kinds[d["kind"]].owner if isinstance(d, dict) and d.get("kind") in kinds else Owner.OPERATOR
        for d in docs
    }
    if owners == {Owner.OPERATOR}:
        await service.apply(docs, dry_run=True)
        await service.apply(docs)
    else:
        parse_documents(docs)


def _config_problem(block: Block, docs: list[Any]) -> str | None:
    checker = block.info[1] if len(block.info) > 1 else ""
    if checker not in ("proxy-local", "proxy-ingress", "edge-config"):
        return None
    (raw,) = docs
    try:
        if checker == "edge-config":
            edge_config.parse(raw)
        else:
            proxy_config.parse(raw, checker.removeprefix("proxy-"))
    except proxy_config.ConfigError as exc:
        return str(exc)
    return None


async def test_yaml_examples_in_the_docs_validate(tmp_path: Path) -> None:
    problems: list[str] = []
    validated = 0
    for page in all_docs():
        blocks = [b for b in code_blocks(page) if b.info[:1] in (("yaml",), ("yml",))]
        if not blocks:
            continue
        service, store, mirror = await _service(tmp_path / page.stem)
        try:
            for block in blocks:
                found, block_problems = await _check_block(service, block)
                validated += found
                problems += block_problems
        finally:
            await mirror.stop()
            await store.close()
    assert validated > 10, f"only {validated} resource examples found in docs/"
    assert not problems, "\n".join(problems)


async def _check_block(service: ResourceService, block: Block) -> tuple[int, list[str]]:
    """(1 if the block holds resources else 0, its problems)."""
    try:
        docs = parse_text(block.text)
    except ValidationFailed as bad:
        return 0, [f"{block.where}: {bad}"]
    if not any(isinstance(d, dict) and "apiVersion" in d for d in docs):
        problem = _config_problem(block, docs)
        return 0, [] if problem is None else [f"{block.where}: {problem}"]
    invalid = "invalid" in block.info
    try:
        await _validate(service, docs)
    except ValidationFailed as failed:
        if not invalid:
            return 1, [f"{block.where}: refused:\n  " + "\n  ".join(map(str, failed.violations))]
        page = block.path.read_text()
        quoted = [f"{v.path}: {v.message}" if v.path else v.message for v in failed.violations]
        return 1, [f"{block.where}: the page does not quote {q!r}" for q in quoted if q not in page]
    except PermissionDenied as denied:
        return 1, [f"{block.where}: {denied}"]
    return 1, [f"{block.where}: marked invalid, but it validates"] if invalid else []


def test_a_wrong_example_is_caught() -> None:
    doc = {
        "apiVersion": "meshgate/v1alpha1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"name": "http", "port": 80, "protocol": "udp"}]},
    }
    with pytest.raises(ValidationFailed):
        parse_documents([doc])


# -- links ---------------------------------------------------------------------------------------


def _slug(title: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower().replace("`", "")).replace(" ", "-")


def test_links_in_the_docs_resolve() -> None:
    broken = []
    for page in all_docs():
        for m in re.finditer(r"\]\(([^)\s]+)\)", page.read_text()):
            target = m.group(1)
            if re.match(r"^[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}: no such file")
            elif anchor and file.suffix == ".md" and anchor not in {_slug(t) for t in sections(file)}:
                broken.append(f"{page.relative_to(ROOT)}: {target}: no such heading")
    assert not broken, "\n".join(broken)
