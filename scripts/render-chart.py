#!/usr/bin/env python3
"""Renders deploy/helm/zopp without a helm binary (Debian ships none), for the linters.

It understands the subset of Go templates the chart uses, and fails on anything else so the
chart cannot drift past it unnoticed: {{ .Values.a.b }}, {{ .Release.Name }},
{{ .Release.Namespace }}, {{ add X N }}, {{ toYaml X | nindent N }}, {{ if X }} / {{ if and X Y }}
... {{ end }}, {{ range X }} {{ . }} {{ end }}, and the {{- trim marker.

    render-chart.py CHART_DIR [--set key.path=value ...] > rendered.yaml
"""

import json
import re
import sys
from pathlib import Path

import yaml

TOKEN = re.compile(r"(\{\{-?\s*)(.*?)(\s*-?\}\})", re.S)


def lookup(ctx, path):
    if path == ".":
        return ctx["."]
    parts = path.lstrip(".").split(".")
    cur = ctx
    for p in parts:
        if not isinstance(cur, dict) or p not in cur:
            raise SystemExit(f"render-chart: unknown value {path}")
        cur = cur[p]
    return cur


def value(ctx, expr):
    expr = expr.strip()
    m = re.fullmatch(r"add\s+(\S+)\s+(-?\d+)", expr)
    if m:
        return int(lookup(ctx, m.group(1))) + int(m.group(2))
    m = re.fullmatch(r"toYaml\s+(\S+)\s*\|\s*nindent\s+(\d+)", expr)
    if m:
        text = yaml.safe_dump(lookup(ctx, m.group(1)), default_flow_style=False).rstrip("\n")
        pad = " " * int(m.group(2))
        return "\n" + "\n".join(pad + line for line in text.splitlines())
    m = re.fullmatch(r"and\s+(\S+)\s+(\S+)", expr)
    if m:
        return bool(lookup(ctx, m.group(1))) and bool(lookup(ctx, m.group(2)))
    if re.fullmatch(r"\.[A-Za-z0-9_.]*|\.", expr):
        return lookup(ctx, expr)
    raise SystemExit(f"render-chart: unsupported template expression {{{{ {expr} }}}}")


def parse(text):
    """Splits a template into text and (kind, expr) tags, applying trim markers."""
    out, pos = [], 0
    for m in TOKEN.finditer(text):
        chunk = text[pos : m.start()]
        if m.group(1).startswith("{{-"):
            chunk = chunk.rstrip()
        out.append(chunk)
        out.append(("tag", m.group(2).strip(), m.group(3).endswith("-}}")))
        pos = m.end()
    out.append(text[pos:])
    # A right trim marker eats the whitespace after the tag.
    for i, item in enumerate(out):
        if isinstance(item, tuple) and item[2] and i + 1 < len(out):
            out[i + 1] = out[i + 1].lstrip()
    return [x if isinstance(x, str) else (x[1],) for x in out]


def render(items, ctx):
    out, i = [], 0
    while i < len(items):
        item = items[i]
        if isinstance(item, str):
            out.append(item)
            i += 1
            continue
        expr = item[0]
        if expr.startswith("if ") or expr.startswith("range "):
            depth, j = 1, i + 1
            while depth:
                if j >= len(items):
                    raise SystemExit("render-chart: unclosed block")
                if isinstance(items[j], tuple):
                    e = items[j][0]
                    if e.startswith("if ") or e.startswith("range "):
                        depth += 1
                    elif e == "end":
                        depth -= 1
                j += 1
            body = items[i + 1 : j - 1]
            if expr.startswith("if "):
                if value(ctx, expr[3:]):
                    out.append(render(body, ctx))
            else:
                for element in value(ctx, expr[6:]) or []:
                    out.append(render(body, {**ctx, ".": element}))
            i = j
            continue
        if expr == "end":
            raise SystemExit("render-chart: stray end")
        v = value(ctx, expr)
        out.append(json.dumps(v) if isinstance(v, bool) else str(v))
        i += 1
    return "".join(out)


def set_value(values, assignment):
    path, raw = assignment.split("=", 1)
    keys = path.split(".")
    cur = values
    for k in keys[:-1]:
        cur = cur.setdefault(k, {})
    cur[keys[-1]] = yaml.safe_load(raw)


def main():
    args = sys.argv[1:]
    if not args:
        raise SystemExit(__doc__)
    chart = Path(args[0])
    values = yaml.safe_load((chart / "values.yaml").read_text())
    rest = args[1:]
    while rest:
        if rest[0] != "--set" or len(rest) < 2:
            raise SystemExit(__doc__)
        set_value(values, rest[1])
        rest = rest[2:]
    ctx = {"Values": values, "Release": {"Name": "zopp", "Namespace": "default"}, ".": None}
    docs = []
    for template in sorted((chart / "templates").glob("*.yaml")):
        text = render(parse(template.read_text()), ctx).strip()
        if text:
            docs.append(f"# Source: {template.name}\n{text}\n")
    sys.stdout.write("---\n".join(docs))


if __name__ == "__main__":
    main()
