"""Validate client-protocol messages against the router's AsyncAPI document.

Usage: python3 validate.py ASYNCAPI_JSON CASES_JSON

CASES_JSON is a list of {"id": ..., "message": <a JSON value>}. Each case is validated
against every message of components.messages whose `name` equals the case's `message` field,
with a JSON Schema Draft 2020-12 validator (formats checked where the installed validator can;
the schemas' patterns check what matters). Prints one JSON object on stdout:
{"schemaErrors": [...], "cases": [{"id", "candidates": [{"component", "errors": [...]}]}]}
where an empty "errors" list means the case is valid against that component. Deciding what
is a failure is the caller's job.
"""
import json
import sys

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

DOC_URI = "urn:csta-router:asyncapi"


def describe(error):
    """One line: where in the message, and what is wrong (a `not` by its description)."""
    where = "/".join(str(p) for p in error.absolute_path) or "(message)"
    if error.validator == "not" and isinstance(error.validator_value, dict):
        return f"{where}: {error.validator_value.get('description', error.message)}"
    return f"{where}: {error.message}"


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        doc = json.load(f)
    with open(sys.argv[2], encoding="utf-8") as f:
        cases = json.load(f)
    registry = Registry().with_resource(
        DOC_URI, Resource.from_contents(doc, default_specification=DRAFT202012)
    )
    validators = {}
    schema_errors = []
    for key, message in doc["components"]["messages"].items():
        try:
            Draft202012Validator.check_schema(message["payload"])
        except Exception as e:  # report every broken schema, not just the first
            schema_errors.append(f"{key}: {e}")
            continue
        schema = {"$ref": f"{DOC_URI}#/components/messages/{key}/payload"}
        validators.setdefault(message["name"], []).append(
            (
                key,
                Draft202012Validator(
                    schema,
                    registry=registry,
                    format_checker=Draft202012Validator.FORMAT_CHECKER,
                ),
            )
        )
    results = []
    for case in cases:
        value = case["message"]
        name = value.get("message") if isinstance(value, dict) else None
        candidates = []
        for key, validator in validators.get(name, []) if isinstance(name, str) else []:
            errors = [
                describe(e)
                for e in sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.absolute_path)))
            ]
            candidates.append({"component": key, "errors": errors})
        results.append({"id": case["id"], "candidates": candidates})
    json.dump({"schemaErrors": schema_errors, "cases": results}, sys.stdout)


main()
