"""OpenAPI documentation of the task endpoints' three request forms (multipart, JSON, raw)."""

from __future__ import annotations

from typing import Any

from service.http.forms import RequestFields
from service.http.schemas import ErrorResponse
from service.tasks.common import JSON

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorResponse} for s in (400, 404, 406, 413, 415, 422, 429, 503, 504)
}
"""The error statuses every task endpoint may answer (for ``responses=``)."""


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema with its ``$defs`` inlined (OpenAPI request bodies cannot point at
    a model's own ``$defs``). Request models are not recursive."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return walk(dict(defs[ref.split("/")[-1]]))
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


def _form_property(prop: dict[str, Any]) -> dict[str, Any]:
    """A form field's schema: the option's scalar type, or text (lists: JSON or comma-separated)."""
    kinds = [p for p in prop.get("anyOf", [prop]) if p.get("type") != "null"]
    scalar = len(kinds) == 1 and kinds[0].get("type") in ("boolean", "integer", "number", "string")
    out = {k: kinds[0][k] for k in ("type", "enum") if k in kinds[0]} if scalar else {"type": "string"}
    desc = prop.get("description", "") if scalar else \
        f"{prop.get('description', '')} (JSON list or comma-separated.)".strip()
    return {**out, "description": desc} if desc else out


def openapi_body(spec: RequestFields[Any]) -> dict[str, Any]:
    """``openapi_extra`` documenting the three request forms of an endpoint."""
    json_schema = _inline_refs(spec.json_model.model_json_schema())
    props: dict[str, Any] = {
        "file": {"type": "string", "format": "binary", "description": "The image."},
        "options": {"type": "string", "description": "JSON object of options; fields win over it."},
    }
    for name in spec.extras:
        desc = json_schema["properties"].get(name, {}).get("description", "")
        props[name] = {"type": "string", "description": f"{desc} (JSON text.)".strip()}
    for name, prop in _inline_refs(spec.options.model_json_schema())["properties"].items():
        props[name] = _form_property(prop)
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "required": ["file"], "properties": props}
                },
                JSON: {"schema": json_schema},
                "image/*": {"schema": {"type": "string", "format": "binary"},
                            "description": "Raw image; options as query parameters."},
            },
        }
    }
