"""OpenAPI post-processing: every operation documents the errors it may answer, as RFC 9457
problem details (``api/problems.py``), so clients and schema-driven tests know them."""

from __future__ import annotations

from typing import Any

from api.problems import PROBLEM_CONTENT_TYPE

PROBLEM_SCHEMA = {
    "type": "object",
    "description": "RFC 9457 problem details.",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "Each problem of a 400, with the path of the value at fault.",
            "items": {
                "type": "object",
                "properties": {
                    "path": {"type": "string"},
                    "message": {"type": "string"},
                    "row": {"type": "integer"},
                    "field": {"type": "string"},
                },
                "required": ["path", "message"],
            },
        },
    },
    "required": ["type", "title", "status"],
}

ERRORS = {
    "400": "Invalid input: each problem with its path.",
    "401": "No token, or a bad, revoked or expired one.",
    "403": "The token lacks the scope, or the role the right.",
    "404": "Not found, or not yours.",
    "409": "Refused by a business rule (the message says which).",
    "413": "The request body is too large.",
    "429": "Too many requests: see Retry-After.",
}
WITH_BODY = {"post", "put", "patch"}
WITH_OBJECT = {"400", "401", "403", "404", "429"}


def add_problem_responses(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular POSTPROCESSING_HOOK: the problem schema and the error responses."""
    result.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    reference = {"$ref": "#/components/schemas/Problem"}
    for path, operations in result.get("paths", {}).items():
        if not path.startswith("/api/v1/"):
            continue
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            codes = set(WITH_OBJECT)
            if method in WITH_BODY:
                codes |= {"409", "413"}
            if method == "delete":
                codes.add("409")
            for code in sorted(codes):
                operation["responses"].setdefault(
                    code,
                    {
                        "description": ERRORS[code],
                        "content": {PROBLEM_CONTENT_TYPE: {"schema": reference}},
                    },
                )
    return result
