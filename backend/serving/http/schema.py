"""The endpoint's OpenAPI document names each route's request body.

The routes read their bodies themselves (:func:`backend.serving.http.protocol.parse_body`,
so that every problem is answered in the protocol's own error shape), which leaves
FastAPI's generated document without request bodies. :func:`describe_bodies` adds them
from the same pydantic models the routes parse with, plus the bearer token of the
management routes: ``/docs`` shows them, clients can generate from them, and the suite
fuzzes the real server from them (tests/security/test_schema_fuzz.py, Schemathesis).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from backend.serving.http.protocol import (ChatCompletionRequest, CompletionRequest, GenerateRequest,
                                           LoadLoraAdapterRequest, UnloadLoraAdapterRequest)

BODIES: dict[str, type[BaseModel]] = {
    "/v1/chat/completions": ChatCompletionRequest,
    "/v1/completions": CompletionRequest,
    "/v1/load_lora_adapter": LoadLoraAdapterRequest,
    "/v1/unload_lora_adapter": UnloadLoraAdapterRequest,
    "/generate": GenerateRequest,
    "/generate_stream": GenerateRequest,
    "/": GenerateRequest,
}
TOKEN_ROUTES = ("/v1/load_lora_adapter", "/v1/unload_lora_adapter")


def describe_bodies(app: FastAPI) -> None:
    """Make ``app.openapi()`` name the request body of every POST route in :data:`BODIES`."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, routes=app.routes)
            models = sorted(set(BODIES.values()), key=lambda m: m.__name__)
            refs, definitions = models_json_schema([(m, "validation") for m in models],
                                                   ref_template="#/components/schemas/{model}")
            components = document.setdefault("components", {})
            components.setdefault("schemas", {}).update(definitions.get("$defs", {}))
            components.setdefault("securitySchemes", {})["token"] = {"type": "http", "scheme": "bearer"}
            for path, model in BODIES.items():
                operation = document["paths"].get(path, {}).get("post")
                if operation is None:
                    continue
                schema = refs[(model, "validation")]
                operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
                if path in TOKEN_ROUTES:
                    operation["security"] = [{"token": []}]
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi
