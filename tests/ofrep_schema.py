#!/usr/bin/env python3
"""Validates a JSON document (stdin) against a component schema of the OFREP OpenAPI document.

usage: ofrep_schema.py OPENAPI_YAML SCHEMA_NAME < document.json

Prints one line per violation and exits 1 when there is any. Two alternatives of the document's
`oneOf` cannot be told apart as written: `codeDefaultFlag` ("this schema has no value property")
matches every object, and `floatFlag` matches integers too, so every valued answer would match
two alternatives. They are sharpened to their documented meaning before validating.
"""
import json
import sys

import yaml
from jsonschema import Draft202012Validator

spec = yaml.safe_load(open(sys.argv[1], encoding="utf-8"))
components = spec["components"]
schemas = components["schemas"]
schemas["codeDefaultFlag"]["not"] = {"required": ["value"]}
schemas["floatFlag"]["properties"]["value"]["not"] = {"type": "integer"}
schema = {"$ref": f"#/components/schemas/{sys.argv[2]}", "components": components}
document = json.load(sys.stdin)
errors = sorted(Draft202012Validator(schema).iter_errors(document), key=str)
for error in errors:
    print(f"{list(error.absolute_path)}: {error.message}")
sys.exit(1 if errors else 0)
