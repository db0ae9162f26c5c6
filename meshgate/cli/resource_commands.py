"""``meshgate apply | get | delete | describe``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import click

from meshgate.cli.client import ApiError, Client
from meshgate.cli.common import connection_options, fail, handle_errors, make_client, report_api_error
from meshgate.cli.exits import Exit, for_status
from meshgate.cli.output import describe as describe_text
from meshgate.cli.output import table, to_json, to_yaml
from meshgate.resources.documents import parse_text
from meshgate.resources.kinds import REGISTRY
from meshgate.resources.registry import KindDescriptor
from meshgate.resources.violations import ValidationFailed

RESOURCE_SUFFIXES = (".yaml", ".yml", ".json")


def _kind(name: str) -> KindDescriptor:
    descriptor = REGISTRY.resolve(name)
    if descriptor is None or not descriptor.exposed:
        known = ", ".join(d.plural for d in REGISTRY.exposed())
        fail(f"unknown kind {name!r}; known: {known}", Exit.INVALID)
        raise AssertionError
    return descriptor


def _files(paths: tuple[str, ...]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for raw in paths:
        if raw == "-":
            out.append(("<stdin>", sys.stdin.read()))
            continue
        path = Path(raw)
        if path.is_dir():
            members = sorted(p for p in path.iterdir() if p.suffix in RESOURCE_SUFFIXES)
            out.extend((str(p), p.read_text()) for p in members)
        elif path.exists():
            out.append((raw, path.read_text()))
        else:
            fail(f"{raw}: no such file or directory", Exit.INVALID)
    return out


@click.command()
@click.option(
    "-f",
    "--filename",
    "filenames",
    multiple=True,
    required=True,
    help="File, directory of *.yaml/*.yml/*.json, or - for stdin (repeatable).",
)
@click.option("--dry-run", is_flag=True, help="Validate on the server; write nothing.")
@connection_options
@handle_errors
def apply(filenames: tuple[str, ...], dry_run: bool, **kwargs: Any) -> None:
    """Create or update every resource in the files, all or nothing."""
    client = make_client(kwargs)
    docs: list[Any] = []
    origins: list[tuple[str, int]] = []
    for name, text in _files(filenames):
        try:
            parsed = parse_text(text)
        except ValidationFailed as exc:
            fail(f"{name}: {exc}", Exit.INVALID)
        docs.extend(parsed)
        origins.extend((name, i) for i in range(len(parsed)))
    if not docs:
        fail("no documents found in " + ", ".join(filenames), Exit.INVALID)
    query = "?dryRun=true" if dry_run else ""
    body = {"apiVersion": "meshgate/v1alpha1", "kind": "List", "items": docs}
    try:
        report = client.request("POST", f"/api/v1/apply{query}", json_body=body)
    except ApiError as exc:

        def where(index: int) -> str:
            if 0 <= index < len(origins):
                return f"{origins[index][0]} document {origins[index][1]}"
            return f"document {index}"

        report_api_error(exc, where)
        sys.exit(int(for_status(exc.status)))
    suffix = " (dry run)" if report["dryRun"] else ""
    for item in report["results"]:
        click.echo(f"{item['kind'].lower()}/{item['name']} {item['outcome']}{suffix}")


@click.command()
@click.argument("kind")
@click.argument("name", required=False)
@click.option("-l", "--selector", help="Label selector, e.g. env=prod,tier!=db")
@click.option("-o", "--output", type=click.Choice(["table", "yaml", "json"]), default="table")
@connection_options
@handle_errors
def get(kind: str, name: str | None, selector: str | None, output: str, **kwargs: Any) -> None:
    """Show resources of a kind, or one by name."""
    show(make_client(kwargs), _kind(kind), name, selector, output)


def show(
    client: Client, descriptor: KindDescriptor, name: str | None, selector: str | None, output: str
) -> None:
    """Print resources of one kind (one by name): a table, YAML or JSON."""
    if name is not None:
        doc = client.request("GET", f"/api/v1/{descriptor.plural}/{quote(name, safe='')}")
        docs = [doc]
    else:
        query = f"?{urlencode({'labelSelector': selector})}" if selector else ""
        listing = client.request("GET", f"/api/v1/{descriptor.plural}{query}")
        docs = listing["items"]
    if output == "json":
        click.echo(to_json(docs[0] if name else listing))
    elif output == "yaml":
        click.echo(to_yaml(docs), nl=False)
    elif docs:
        click.echo(table(descriptor, docs))
    else:
        click.echo(f"No {descriptor.plural} found.", err=True)


@click.command()
@click.argument("kind")
@click.argument("name")
@click.option("--resource-version", help="Delete only if still at this resourceVersion.")
@click.option("--dry-run", is_flag=True, help="Check on the server; delete nothing.")
@connection_options
@handle_errors
def delete(kind: str, name: str, resource_version: str | None, dry_run: bool, **kwargs: Any) -> None:
    """Delete one resource (refused while others reference it)."""
    descriptor = _kind(kind)
    client = make_client(kwargs)
    params = {
        k: v for k, v in (("resourceVersion", resource_version), ("dryRun", "true" if dry_run else None)) if v
    }
    query = f"?{urlencode(params)}" if params else ""
    report = client.request("DELETE", f"/api/v1/{descriptor.plural}/{quote(name, safe='')}{query}")
    suffix = " (dry run)" if report["dryRun"] else ""
    for item in report["results"]:
        click.echo(f"{item['kind'].lower()}/{item['name']} deleted{suffix}")


@click.command()
@click.argument("kind")
@click.argument("name")
@connection_options
@handle_errors
def describe(kind: str, name: str, **kwargs: Any) -> None:
    """Show one resource with what it references and what references it."""
    descriptor = _kind(kind)
    client = make_client(kwargs)
    doc = client.request("GET", f"/api/v1/{descriptor.plural}/{quote(name, safe='')}")
    everything = _all_documents(client)
    present = {(d["kind"], d["metadata"]["name"]) for d in everything}
    references = []
    for ref in descriptor.references(descriptor.spec_type.model_validate(_spec_of(doc, descriptor))):
        references.append((f"{ref.kind}/{ref.name}", (ref.kind, ref.name) in present))
    referenced_by = []
    for other in everything:
        other_kind = REGISTRY[other["kind"]]
        try:
            spec = other_kind.spec_type.model_validate(other["spec"])
        except ValueError:
            continue  # a redacted view (Secret) cannot be rebuilt; it references only zones
        if any((r.kind, r.name) == (descriptor.kind, name) for r in other_kind.references(spec)):
            referenced_by.append(f"{other['kind']}/{other['metadata']['name']}")
    click.echo(describe_text(doc, references, referenced_by))


def _spec_of(doc: dict[str, Any], descriptor: KindDescriptor) -> dict[str, Any]:
    spec = dict(doc["spec"])
    for field in descriptor.redacted_fields:  # shown only as digests: put placeholders back
        if field in doc.get("status", {}).get("redacted", {}):
            spec[field] = {}
    return spec


def _all_documents(client: Client) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for descriptor in REGISTRY.exposed():
        out.extend(client.request("GET", f"/api/v1/{descriptor.plural}")["items"])
    return out
