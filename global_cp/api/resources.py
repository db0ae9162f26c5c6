"""Resource routes: list, get, create, replace, delete, and atomic multi-document apply."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from global_cp.api.errors import BadRequest
from global_cp.api.state import service_of, state_of
from global_cp.api.zone_status import zone_statuses
from global_cp.service import WriteReport
from meshgate.resources.documents import parse_text
from meshgate.resources.kinds import REGISTRY
from meshgate.resources.registry import KindDescriptor
from meshgate.resources.selectors import Selector
from meshgate.resources.views import api_document
from meshgate.resources.violations import Violation
from meshgate.store.interface import Expect

API = "/api/v1"
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/plain")


def routes() -> list[web.RouteDef]:
    return [
        web.post(f"{API}/apply", apply),
        web.get(f"{API}/{{plural}}", list_resources),
        web.post(f"{API}/{{plural}}", create),
        web.get(f"{API}/{{plural}}/{{name}}", get),
        web.put(f"{API}/{{plural}}/{{name}}", replace),
        web.delete(f"{API}/{{plural}}/{{name}}", delete),
    ]


def descriptor_of(request: web.Request) -> KindDescriptor:
    plural = request.match_info["plural"]
    descriptor = REGISTRY.resolve(plural)
    if descriptor is None or not descriptor.exposed or descriptor.plural != plural:
        raise web.HTTPNotFound(text=f"no resource type {plural!r}; see /openapi.json")
    return descriptor


def dry_run(request: web.Request) -> bool:
    return request.query.get("dryRun", "").lower() in ("1", "true", "all")


async def read_documents(request: web.Request) -> list[Any]:
    body = await request.text()
    if not body.strip():
        raise BadRequest("empty body: send one document, a list, or multi-document YAML")
    return parse_text(body)


async def list_resources(request: web.Request) -> web.Response:
    descriptor = descriptor_of(request)
    selector_text = request.query.get("labelSelector")
    selector = Selector.parse(selector_text) if selector_text else None
    listing = await service_of(request).list(descriptor.kind, selector)
    items = [api_document(r) for r in listing.items]
    await _with_status(request, items)
    return web.json_response(
        {
            "apiVersion": "meshgate/v1alpha1",
            "kind": "List",
            "metadata": {"resourceVersion": str(listing.revision)},
            "items": items,
        }
    )


async def _with_status(request: web.Request, docs: list[dict[str, Any]]) -> None:
    """Zones carry their sync state and inventory summary (computed, never stored)."""
    if not docs or docs[0]["kind"] != "Zone":
        return
    state = state_of(request)
    statuses = zone_statuses(state.mirror, state.clock.now())
    for doc in docs:
        doc["status"] = statuses.get(doc["metadata"]["name"], {})


async def get(request: web.Request) -> web.Response:
    descriptor = descriptor_of(request)
    resource = await service_of(request).get(descriptor.kind, request.match_info["name"])
    doc = api_document(resource)
    await _with_status(request, [doc])
    return web.json_response(doc)


async def apply(request: web.Request) -> web.Response:
    docs = await read_documents(request)
    report = await service_of(request).apply(docs, dry_run=dry_run(request))
    return web.json_response(report_json(report))


async def create(request: web.Request) -> web.Response:
    descriptor = descriptor_of(request)
    doc = _single(await read_documents(request), descriptor)
    report = await service_of(request).apply([doc], dry_run=dry_run(request), expect=Expect.ABSENT)
    return _written(report, status=201)


async def replace(request: web.Request) -> web.Response:
    descriptor = descriptor_of(request)
    doc = _single(await read_documents(request), descriptor)
    name = request.match_info["name"]
    meta = doc.get("metadata") if isinstance(doc, dict) else None
    if not isinstance(meta, dict) or meta.get("name") != name:
        raise BadRequest(
            "metadata.name must match the URL", [Violation("metadata.name", f"must be {name!r}")]
        )
    report = await service_of(request).apply([doc], dry_run=dry_run(request))
    return _written(report, status=200)


async def delete(request: web.Request) -> web.Response:
    descriptor = descriptor_of(request)
    raw = request.query.get("resourceVersion")
    if raw is not None and not raw.isdigit():
        raise BadRequest("resourceVersion must be a number as read back")
    report = await service_of(request).delete(
        descriptor.kind,
        request.match_info["name"],
        revision=int(raw) if raw is not None else None,
        dry_run=dry_run(request),
    )
    return web.json_response(report_json(report))


def _single(docs: list[Any], descriptor: KindDescriptor) -> Any:
    if len(docs) != 1:
        raise BadRequest(f"send exactly one {descriptor.kind} document (got {len(docs)})")
    doc = docs[0]
    if isinstance(doc, dict) and doc.get("kind") != descriptor.kind:
        raise BadRequest(
            f"this URL takes {descriptor.kind} documents",
            [Violation("kind", f"must be {descriptor.kind}", 0)],
        )
    return doc


def _written(report: WriteReport, status: int) -> web.Response:
    written = report.items[0].resource
    if report.dry_run or written is None:
        return web.json_response(report_json(report))
    return web.json_response(api_document(written), status=status)


def report_json(report: WriteReport) -> dict[str, Any]:
    return {
        "dryRun": report.dry_run,
        "resourceVersion": str(report.revision),
        "results": [
            {
                "kind": item.kind,
                "name": item.name,
                "outcome": item.outcome.value,
                **({"resourceVersion": str(item.revision)} if item.revision is not None else {}),
            }
            for item in report.items
        ],
    }
