#!/usr/bin/env python3
"""Validates an OpenAPI 3.0 document and prints its operations, one "METHOD PATH" per line.

usage: openapi_operations.py OPENAPI_YAML

Exits 1 with the validator's message when the document is not valid OpenAPI.
"""
import sys

import yaml
from openapi_spec_validator import validate

document = yaml.safe_load(open(sys.argv[1], encoding="utf-8"))
try:
    validate(document)
except Exception as error:  # the validator's own exception types vary between versions
    print(f"invalid OpenAPI document: {error}")
    sys.exit(1)
for path, item in document["paths"].items():
    for method in ("get", "put", "post", "delete", "patch", "head"):
        if method in item:
            print(method.upper(), path)
