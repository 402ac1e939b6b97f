#!/usr/bin/env python3
"""Renders the API reference (docs/api.md) from the OpenAPI document.

usage: openapi_markdown.py OPENAPI_YAML > docs/api.md

The test suite renders it again and compares, so the reference cannot drift from the document.
"""
import sys

import yaml

document = yaml.safe_load(open(sys.argv[1], encoding="utf-8"))
schemas = document["components"]["schemas"]
parameters = document["components"]["parameters"]


def resolve(node):
    while isinstance(node, dict) and "$ref" in node:
        name = node["$ref"].split("/")[-1]
        node = schemas.get(name) or parameters.get(name)
    return node


def describe(schema):
    ref = schema.get("$ref") if isinstance(schema, dict) else None
    if ref:
        return f"`{ref.split('/')[-1]}`"
    schema = resolve(schema)
    kind = schema.get("type", "any")
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"])
    if kind == "array":
        return f"array of {describe(schema.get('items', {}))}"
    bounds = []
    for key, text in (("minimum", "≥"), ("maximum", "≤"), ("minLength", "length ≥"), ("maxLength", "length ≤")):
        if key in schema:
            bounds.append(f"{text} {schema[key]}")
    return kind + (f" ({', '.join(bounds)})" if bounds else "")


out = []
info = document["info"]
out.append(f"# {info['title']} (reference)\n")
out.append("Generated from [`src/openapi.yaml`](../src/openapi.yaml) by `tests/openapi_markdown.py`;")
out.append("the test suite checks that it is current. The running server serves the document at")
out.append("`GET /admin/openapi.yaml`.\n")
out.append(info["description"].strip() + "\n")
for tag in [t["name"] for t in document["tags"]]:
    out.append(f"## {tag}\n")
    for path, item in document["paths"].items():
        for method in ("get", "put", "post", "patch", "delete"):
            operation = item.get(method)
            if not operation or tag not in operation.get("tags", []):
                continue
            auth = "no token" if operation.get("security") == [] else "bearer token"
            out.append(f"### `{method.upper()} {path}`\n")
            out.append(f"{operation['summary']} ({auth}).\n")
            params = [resolve(p) for p in item.get("parameters", []) + operation.get("parameters", [])]
            if params:
                out.append("| parameter | in | type | |")
                out.append("|---|---|---|---|")
                for p in params:
                    required = "required" if p.get("required") else ""
                    note = p.get("description", "")
                    out.append(f"| `{p['name']}` | {p['in']} | {describe(p['schema'])} | {' '.join(x for x in (required, note) if x)} |")
                out.append("")
            body = operation.get("requestBody")
            if body:
                schema = body["content"]["application/json"]["schema"]
                resolved = resolve(schema)
                required = set(resolved.get("required", []))
                props = resolved.get("properties", {})
                if "$ref" in schema:
                    out.append(f"Body: {describe(schema)} (see Schemas).\n")
                elif props:
                    out.append("| body field | type | |")
                    out.append("|---|---|---|")
                    for name, prop in props.items():
                        note = "required" if name in required else ""
                        out.append(f"| `{name}` | {describe(prop)} | {note} |")
                    out.append("")
            codes = ", ".join(f"`{code}`" for code in operation["responses"])
            out.append(f"Answers: {codes}.\n")
out.append("## Schemas\n")
for name, schema in schemas.items():
    out.append(f"### `{name}`\n")
    if "properties" in schema:
        required = set(schema.get("required", []))
        out.append("| field | type | |")
        out.append("|---|---|---|")
        for field, prop in schema["properties"].items():
            out.append(f"| `{field}` | {describe(prop)} | {'required' if field in required else ''} |")
        out.append("")
    else:
        out.append(describe(schema) + "\n")
sys.stdout.write("\n".join(out).rstrip() + "\n")
