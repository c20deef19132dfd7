"""OpenAPI documentation of the task endpoints: the three request forms (multipart, JSON, raw),
the query options, and every response.

The schema states what the server enforces (generated clients and fuzzers see the truth): the
options' bounds come from the task's pydantic models, which also validate the requests, and are
copied onto the multipart fields and query parameters. Each multipart field carries a default the
server accepts, so Swagger UI's "Try it out" sends a valid request unchanged: the option's own
default, or ``""`` for an option whose default is the model's (an empty value counts as omitted;
such fields are ``anyOf: [<the option's type>, {"type": "string", "maxLength": 0}]``).
"""

from __future__ import annotations

import json
from typing import Any

from service.http.forms import RequestFields
from service.http.schemas import ErrorResponse
from service.tasks.common import JSON

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorResponse, "description": d} for s, d in (
        (400, "The request cannot be read (body, multipart, base64, JSON, image data, wrong "
              "model task)."),
        (404, "The model is not served (the message lists the served ones)."),
        (406, "No media type this endpoint answers is acceptable (Accept)."),
        (413, "Body or decoded image over the limits."),
        (415, "Unsupported Content-Type or image format."),
        (422, "Invalid options, faces, or a request over the pass / pixel limits."),
        (429, "Too many requests in flight; retry after Retry-After seconds."),
        (503, "The backend cannot answer now (starting, down); retry after Retry-After."),
        (504, "Inference ran past the request deadline."),
    )
}
"""The error statuses every task endpoint may answer (for ``responses=``)."""

#: JSON-schema keywords of a scalar option that a form field or query parameter keeps.
_CONSTRAINTS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength",
                "maxLength", "pattern", "enum", "format")
_EMPTY = {"type": "string", "maxLength": 0}
"""An empty form value: the option is omitted (its default is the model's)."""


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


def _text_default(value: Any) -> str:
    """A list default as the text a form field takes (JSON)."""
    return json.dumps(value)


def form_property(prop: dict[str, Any]) -> dict[str, Any]:
    """A multipart field's schema for an option's JSON schema ``prop``: scalars keep their type
    and bounds, lists (and unions with lists or words) become text (JSON list or
    comma-separated); every field has a default the server accepts (see the module docstring)."""
    kinds = [p for p in prop.get("anyOf", [prop]) if p.get("type") != "null"]
    nullable = len(kinds) < len(prop.get("anyOf", [prop]))
    desc = prop.get("description", "")
    scalar = len(kinds) == 1 and kinds[0].get("type") in ("boolean", "integer", "number", "string")
    default = prop.get("default")
    if scalar:
        out: dict[str, Any] = {"type": kinds[0]["type"]}
        out.update({k: kinds[0][k] for k in _CONSTRAINTS if k in kinds[0]})
        if default is not None:
            out["default"] = default
        elif out["type"] == "string" and "enum" not in out and "minLength" not in out:
            out["default"] = ""
        else:  # the model's default: the option's type, or empty
            out = {"anyOf": [out, _EMPTY], "default": ""}
            desc = f"{desc} Empty: the model's default.".strip()
    else:
        out = {"type": "string", "default": _text_default(default) if default is not None else ""}
        desc = f"{desc} (JSON list or comma-separated text.)".strip()
    if desc:
        out["description"] = desc
    return out


def query_parameter(name: str, prop: dict[str, Any]) -> dict[str, Any]:
    """The optional query parameter of an option: the form field's schema without a default (a
    query string only carries what the client writes), the same bounds."""
    schema = {k: v for k, v in form_property(prop).items() if k not in ("default", "description")}
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": f"{prop.get('description', '')} Same as the form field; form and "
            "JSON fields win over the query.".strip()}


def openapi_body(spec: RequestFields[Any]) -> dict[str, Any]:
    """``openapi_extra`` documenting the three request forms and the query options of an
    endpoint."""
    json_schema = _inline_refs(spec.json_model.model_json_schema())
    options = _inline_refs(spec.options.model_json_schema())["properties"]
    props: dict[str, Any] = {
        "file": {"type": "string", "format": "binary", "description": "The image."},
        "options": {"type": "string", "default": "{}",
                    "description": "JSON object of options; the individual fields win over it."},
    }
    for name in spec.extras:
        desc = json_schema["properties"].get(name, {}).get("description", "")
        props[name] = {"type": "string", "default": "",
                       "description": f"{desc} (JSON text; empty: none.)".strip()}
    for name, prop in options.items():
        props[name] = form_property(prop)
    parameters = [query_parameter("options", {"type": "string", "description":
                                              "JSON object of options."})]
    parameters += [query_parameter(name, prop) for name, prop in options.items()]
    return {
        "parameters": parameters,
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
        },
    }
