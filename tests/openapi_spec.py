"""Validate our wire bodies against OpenAI's official spec (``../shared/openai-openapi``)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).resolve().parents[2] / "shared" / "openai-openapi" / "openapi.yaml"


def _fix_nullable(node: Any) -> Any:
    """The spec is 3.1 but still uses 3.0's ``nullable``; turn it into a JSON-Schema union."""
    if isinstance(node, dict):
        fixed = {k: _fix_nullable(v) for k, v in node.items()}
        if fixed.pop("nullable", False):
            return {"anyOf": [fixed, {"type": "null"}]}
        return fixed
    if isinstance(node, list):
        return [_fix_nullable(v) for v in node]
    return node


@functools.cache
def _spec() -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with SPEC_PATH.open(encoding="utf-8") as f:
        spec: dict[str, Any] = yaml.load(f, Loader=loader)  # noqa: S506 - SafeLoader
    return _fix_nullable(spec)  # type: ignore[no-any-return]


@functools.cache
def _registry() -> Registry:
    resource = Resource.from_contents(_spec(), default_specification=DRAFT202012)
    return Registry().with_resource("spec", resource)


def validate(schema_name: str, instance: Any) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``instance`` matches ``schema_name``."""
    schema = {"$ref": f"spec#/components/schemas/{schema_name}"}
    validator = jsonschema.Draft202012Validator(schema, registry=_registry())
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        raise AssertionError(f"{schema_name}: {best.message} at {list(best.absolute_path)}")


def validate_error(body: Any) -> None:
    validate("ErrorResponse", body)
    assert set(body["error"]) >= {"message", "type", "param", "code"}
