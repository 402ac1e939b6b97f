#!/usr/bin/env python3
"""Validates a JSON document (stdin) against a JSON Schema (draft 2020-12) file.

usage: json_schema.py SCHEMA_JSON < document.json

Prints one line per violation and exits 1 when there is any.
"""
import json
import sys

from jsonschema import Draft202012Validator

schema = json.load(open(sys.argv[1], encoding="utf-8"))
Draft202012Validator.check_schema(schema)
document = json.load(sys.stdin)
errors = sorted(Draft202012Validator(schema).iter_errors(document), key=str)
for error in errors:
    print(f"{list(error.absolute_path)}: {error.message}")
sys.exit(1 if errors else 0)
