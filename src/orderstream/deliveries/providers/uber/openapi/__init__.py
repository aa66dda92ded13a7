"""Uber Direct's official OpenAPI files (Apache-2.0, see LICENSE) and a request validator built on them.

The adapter's tests and the simulator both check requests with `validate_request`, so what we send
and what the simulator accepts are held to the same published contract.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

DELIVERIES_SPEC = "deliveries.openapi.yaml"
AUTH_SPEC = "auth.openapi.yaml"
_SPEC_URI = "urn:uber-direct:"


@cache
def load_spec(name: str = DELIVERIES_SPEC) -> dict[str, Any]:
    """The parsed OpenAPI document shipped in this package."""
    text = resources.files(__package__).joinpath(name).read_text(encoding="utf-8")
    # the published files use unquoted RFC 3339 examples; keep every scalar a string, as JSON would
    loaded: dict[str, Any] = yaml.load(text, Loader=_NoDatesLoader)  # noqa: S506 - a SafeLoader subclass
    return loaded


class _NoDatesLoader(yaml.SafeLoader):  # type: ignore[misc, unused-ignore]
    """SafeLoader that leaves timestamps as strings."""


_NoDatesLoader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@dataclass(frozen=True)
class Operation:
    """One path + method of a spec."""

    spec: str
    method: str
    template: str
    pattern: re.Pattern[str]
    definition: Mapping[str, Any]
    path_params: tuple[str, ...]


@dataclass(frozen=True)
class ValidationResult:
    """What validating one request found: the operation matched (if any) and every problem."""

    operation: Operation | None
    errors: tuple[str, ...]
    path_params: Mapping[str, str]

    @property
    def ok(self) -> bool:
        """True when the request conforms to the spec."""
        return self.operation is not None and not self.errors


def _operations(spec_name: str) -> list[Operation]:
    spec = load_spec(spec_name)
    server_path = ""
    servers = spec.get("servers") or []
    if servers:
        server_path = re.sub(r"^[a-z]+://[^/]+", "", servers[0]["url"]).rstrip("/")
    ops: list[Operation] = []
    for template, item in spec["paths"].items():
        names = tuple(re.findall(r"{([^}]+)}", template))
        regex = re.escape(server_path + template)
        for name in names:
            regex = regex.replace(re.escape("{" + name + "}"), f"(?P<{name}>[^/]+)")
        for method, definition in item.items():
            if method.lower() in {"get", "post", "put", "patch", "delete"}:
                ops.append(Operation(spec_name, method.upper(), template, re.compile(f"^{regex}$"), definition, names))
    # literal segments beat parameters: match the longest templates first
    ops.sort(key=lambda op: (-len(op.template.split("/")), op.template.count("{")))
    return ops


@cache
def _all_operations() -> tuple[Operation, ...]:
    return tuple(_operations(DELIVERIES_SPEC) + _operations(AUTH_SPEC))


def _closed(node: Any) -> Any:
    """A copy where every object schema with listed properties refuses unlisted ones."""
    if isinstance(node, dict):
        out = {k: _closed(v) for k, v in node.items()}
        if isinstance(out.get("properties"), dict) and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_closed(v) for v in node]
    return node


@cache
def _registry(spec_name: str, strict: bool) -> Registry[Any]:
    contents = load_spec(spec_name)
    if strict:
        contents = _closed(contents)
    resource: Resource[Any] = DRAFT202012.create_resource(contents)
    registry: Registry[Any] = Registry().with_resource(_SPEC_URI + spec_name, resource)
    return registry


def _schema_errors(spec_name: str, schema: Mapping[str, Any], instance: Any, *, strict: bool = False) -> list[str]:
    root = _rebase_refs(schema, spec_name)
    if strict:
        root = _closed(root)
    wrapped = {"$schema": "https://json-schema.org/draft/2020-12/schema", **root}
    validator = jsonschema.Draft202012Validator(wrapped, registry=_registry(spec_name, strict))
    out = []
    for err in sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path)):
        where = "/".join(str(p) for p in err.absolute_path) or "(body)"
        out.append(f"{where}: {err.message}")
    return out


def _rebase_refs(node: Any, spec_name: str) -> Any:
    if isinstance(node, dict):
        return {
            k: (
                _SPEC_URI + spec_name + v
                if k == "$ref" and isinstance(v, str) and v.startswith("#")
                else _rebase_refs(v, spec_name)
            )
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_rebase_refs(v, spec_name) for v in node]
    return node


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def find_operation(method: str, path: str) -> tuple[Operation | None, dict[str, str]]:
    """The spec operation for a method and URL path (with the server's base path, e.g. /v1/...)."""
    for op in _all_operations():
        match = op.pattern.match(path)
        if match and op.method == method.upper():
            return op, match.groupdict()
    return None, {}


def validate_request(
    method: str,
    path: str,
    *,
    query: str = "",
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
    check_auth: bool = True,
    strict: bool = False,
) -> ValidationResult:
    """Check one HTTP request against the official files: path, method, parameters, body, auth.

    strict also refuses body fields the spec does not list (the adapter's own test uses it).
    """
    op, params = find_operation(method, path)
    if op is None:
        return ValidationResult(None, (f"{method.upper()} {path} is not an operation of the Uber Direct API",), {})
    headers = {k.lower(): v for k, v in (headers or {}).items()}
    errors: list[str] = []
    query_values = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
    for param in op.definition.get("parameters", []):
        name, where = param["name"], param["in"]
        value: str | None
        if where == "path":
            value = params.get(name)
        elif where == "query":
            value = query_values.get(name)
        elif where == "header":
            value = headers.get(name.lower())
        else:
            continue
        if value is None or value == "":
            if param.get("required"):
                errors.append(f"missing required {where} parameter {name}")
            continue
        schema = param.get("schema", {})
        if schema.get("type") == "integer" and not re.fullmatch(r"-?\d+", value):
            errors.append(f"{where} parameter {name} must be an integer, got {value!r}")
    if check_auth and op.spec == DELIVERIES_SPEC and op.definition.get("security", load_spec().get("security")):
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            errors.append("missing OAuth 2.0 bearer token (Authorization: Bearer ...)")
    request_body = op.definition.get("requestBody")
    if request_body is None:
        if body.strip():
            errors.append(f"{op.method} {op.template} takes no request body")
    else:
        content = request_body.get("content", {})
        media = _media_type(headers.get("content-type"))
        if not body.strip():
            if request_body.get("required"):
                errors.append("missing required request body")
        elif media not in content:
            errors.append(f"content type {media or '(none)'} not accepted; expected one of {sorted(content)}")
        else:
            instance: Any
            if media == "application/json":
                try:
                    instance = json.loads(body)
                except ValueError as exc:
                    errors.append(f"request body is not JSON: {exc}")
                    instance = None
            else:
                instance = {k: v[-1] for k, v in parse_qs(body.decode("utf-8"), keep_blank_values=True).items()}
            if instance is not None:
                errors.extend(_schema_errors(op.spec, content[media].get("schema", {}), instance, strict=strict))
    return ValidationResult(op, tuple(errors), params)


def body_schema_errors(method: str, path: str, instance: Any) -> list[str]:
    """Validate an already-parsed JSON body for an operation; [] when valid or when no body is defined."""
    op, _ = find_operation(method, path)
    if op is None:
        return [f"{method.upper()} {path} is not an operation of the Uber Direct API"]
    request_body = op.definition.get("requestBody") or {}
    schema = request_body.get("content", {}).get("application/json", {}).get("schema")
    if schema is None:
        return []
    return _schema_errors(op.spec, schema, instance)


__all__ = ["Operation", "ValidationResult", "find_operation", "load_spec", "validate_request", "body_schema_errors"]
