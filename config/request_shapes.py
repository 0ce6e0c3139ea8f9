"""Request bodies checked against the JSON schema the OpenAPI document declares for them,
before any row is looked at: a body that breaks its declared shape is a 400 for the whole
request, so what the schema promises and what the API enforces are the same thing. Rules
the schema cannot say (an event type's pattern, a rating's range, a timestamp's offset)
stay per row, reported in a 200 reply beside the rows that were stored.

Supports the keywords those schemas use: type (one or a list), nullable, required,
properties, items, minItems, maxItems, minLength, maxLength, anyOf."""

from typing import Any

from rest_framework.exceptions import ValidationError

_PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "object": (dict,),
    "array": (list,), "boolean": (bool,),
}


def _matches_type(value: Any, name: str) -> bool:
    if isinstance(value, bool) and name != "boolean":
        return False
    return isinstance(value, _PYTHON_TYPES[name])


def shape_errors(value: Any, schema: dict, attr: str = "") -> list[tuple[str, str]]:
    """(attr, message) for each way ``value`` breaks ``schema``; empty when it fits."""
    if value is None:
        return [] if schema.get("nullable") else [(attr, "This field may not be null.")]
    if "anyOf" in schema:
        options = [shape_errors(value, option, attr) for option in schema["anyOf"]]
        return [] if any(not errors for errors in options) else min(options, key=len)
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else types
        if not any(_matches_type(value, name) for name in names):
            return [(attr, f"Must be of type {' or '.join(names)}.")]
    errors: list[tuple[str, str]] = []
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            errors.append((attr, f"Must be at least {schema['minLength']} characters."))
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append((attr, f"Must be at most {schema['maxLength']} characters."))
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errors.append((attr, "Must not be empty." if schema["minItems"] == 1
                           else f"Must have at least {schema['minItems']} items."))
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append((attr, f"At most {schema['maxItems']} rows per request."))
        if "items" in schema and not errors:
            for index, item in enumerate(value):
                errors += shape_errors(item, schema["items"], f"{attr}.{index}" if attr
                                       else str(index))
    if isinstance(value, dict):
        for name in schema.get("required", ()):
            if name not in value:
                errors.append((_join(attr, name), "This field is required."))
        for name, field_schema in schema.get("properties", {}).items():
            if name in value:
                errors += shape_errors(value[name], field_schema, _join(attr, name))
    return errors


def _join(attr: str, name: str) -> str:
    return f"{attr}.{name}" if attr else name


def require_shape(value: Any, schema: dict) -> None:
    """Raises the API's 400 validation error listing every shape error (the first 20)."""
    errors = shape_errors(value, schema)
    if errors:
        raise ValidationError({attr or "non_field_errors": [message]
                               for attr, message in errors[:20]})
