"""The OpenAPI 3.1 document of the API, derived from the kind descriptors and spec models."""

from __future__ import annotations

from functools import cache
from typing import Any

from aiohttp import web

from meshgate import __version__
from meshgate.resources.kinds import REGISTRY
from meshgate.resources.model import API_VERSION

REF = "#/components/schemas/{model}"


def _error() -> dict[str, Any]:
    return {"$ref": "#/components/responses/Error"}


def _kind_schema(kind: str, spec_ref: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": API_VERSION},
            "kind": {"const": kind},
            "metadata": {"$ref": REF.format(model="Metadata")},
            "spec": {"$ref": REF.format(model=spec_ref)},
            "status": {"type": "object", "description": "Set by the server; ignored on input."},
        },
    }


def _metadata_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["name"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "resourceVersion": {"type": "string", "description": "Compare-and-swap on write."},
            "generation": {"type": "integer", "readOnly": True},
            "creationTimestamp": {"type": "string", "format": "date-time", "readOnly": True},
        },
    }


def _paths(plural: str, kind: str) -> dict[str, Any]:
    ref = {"$ref": REF.format(model=kind)}
    body = {
        "required": True,
        "content": {"application/json": {"schema": ref}, "application/yaml": {"schema": ref}},
    }
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    dry = {"name": "dryRun", "in": "query", "schema": {"type": "boolean"}}
    errors = {code: _error() for code in ("400", "401", "403", "404", "409", "413", "503")}
    one = {"200": {"description": kind, "content": {"application/json": {"schema": ref}}}, **errors}
    return {
        f"/api/v1/{plural}": {
            "get": {
                "summary": f"List {kind} resources",
                "parameters": [{"name": "labelSelector", "in": "query", "schema": {"type": "string"}}],
                "responses": {
                    "200": {
                        "description": f"{kind} list",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {"items": {"type": "array", "items": ref}},
                                }
                            }
                        },
                    },
                    **errors,
                },
            },
            "post": {
                "summary": f"Create a {kind}",
                "parameters": [dry],
                "requestBody": body,
                "responses": {"201": one["200"], **errors},
            },
        },
        f"/api/v1/{plural}/{{name}}": {
            "parameters": [name],
            "get": {"summary": f"Read a {kind}", "responses": one},
            "put": {
                "summary": f"Create or replace a {kind} (CAS on metadata.resourceVersion)",
                "parameters": [dry],
                "requestBody": body,
                "responses": one,
            },
            "delete": {
                "summary": f"Delete a {kind}",
                "parameters": [dry, {"name": "resourceVersion", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": {"$ref": "#/components/responses/WriteReport"}, **errors},
            },
        },
    }


@cache
def document() -> dict[str, Any]:
    schemas: dict[str, Any] = {"Metadata": _metadata_schema()}
    paths: dict[str, Any] = {}
    for descriptor in REGISTRY.exposed():
        spec_schema = descriptor.spec_type.model_json_schema(by_alias=True, ref_template=REF)
        schemas.update(spec_schema.pop("$defs", {}))
        spec_name = descriptor.spec_type.__name__
        schemas[spec_name] = spec_schema
        schemas[descriptor.kind] = _kind_schema(descriptor.kind, spec_name) | {
            "description": descriptor.description
        }
        paths.update(_paths(descriptor.plural, descriptor.kind))
    errors = {code: _error() for code in ("400", "401", "403", "409", "413", "503")}
    paths["/api/v1/apply"] = {
        "post": {
            "summary": "Create or update several resources atomically (all or nothing)",
            "parameters": [{"name": "dryRun", "in": "query", "schema": {"type": "boolean"}}],
            "requestBody": {
                "required": True,
                "content": {
                    "application/yaml": {"schema": {"type": "string"}},
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {"items": {"type": "array", "items": {"type": "object"}}},
                        }
                    },
                },
            },
            "responses": {"200": {"$ref": "#/components/responses/WriteReport"}, **errors},
        }
    }
    paths["/api/v1/watch"] = {
        "get": {
            "summary": "Stream changes after a revision (newline-delimited JSON)",
            "parameters": [
                {"name": "fromRevision", "in": "query", "schema": {"type": "string"}},
                {"name": "kinds", "in": "query", "schema": {"type": "string"}},
            ],
            "responses": {
                "200": {
                    "description": "NDJSON events",
                    "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
                },
                "410": _error(),
                "401": _error(),
            },
        }
    }
    paths["/api/v1/tokens"] = {
        "post": {
            "summary": "Create a join token (zone, edge, ingress or proxy)",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["role", "zone"],
                            "properties": {
                                "role": {"enum": ["zone", "edge", "ingress", "proxy"]},
                                "zone": {"type": "string"},
                                "ttl": {"type": "string"},
                                "reusable": {"type": "boolean"},
                                "mesh": {"type": "string"},
                            },
                        }
                    }
                },
            },
            "responses": {"201": {"description": "The token and its claims"}, **errors},
        }
    }
    paths["/api/v1/meshes/{name}/ca"] = {
        "get": {
            "summary": "The mesh's root CA certificate and fingerprint (never its key)",
            "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "CA certificate"}, "404": _error()},
        }
    }
    for path in ("/healthz", "/readyz", "/metrics"):
        paths[path] = {
            "get": {"summary": path.strip("/"), "security": [], "responses": {"200": {"description": "OK"}}}
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": "meshgate global control plane", "version": __version__},
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {
                "Error": {
                    "description": "Refused; nothing was written",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "error": {
                                        "type": "object",
                                        "properties": {
                                            "status": {"type": "integer"},
                                            "reason": {"type": "string"},
                                            "message": {"type": "string"},
                                            "violations": {
                                                "type": "array",
                                                "items": {
                                                    "type": "object",
                                                    "properties": {
                                                        "path": {"type": "string"},
                                                        "message": {"type": "string"},
                                                        "document": {"type": "integer"},
                                                        "kind": {"type": "string"},
                                                        "name": {"type": "string"},
                                                    },
                                                },
                                            },
                                        },
                                    }
                                },
                            }
                        }
                    },
                },
                "WriteReport": {
                    "description": "What the write did",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
            },
        },
    }


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(document())
