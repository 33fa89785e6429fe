#!/usr/bin/env python3
"""scripts/check-layers.py: the crates' modules import one way.

For each crate below, every top-level module (a file `foo.rs` and its folder `foo/`) is given a
layer, highest first. A module may name (`crate::foo`, `use crate::{foo, ...}`, doc links
included) only modules of its own layer or of lower ones, and the modules of the crate must
not import each other in a circle, even within one layer. Fails, naming the file and line,
when a module names a higher layer, when there is a cycle, or when a module has no layer (add
it below where it belongs: see style.md, "Layers").

    scripts/check-layers.py            check every crate, print the layers
    scripts/check-layers.py -q         print only problems
"""

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Highest layer first. Modules listed but absent are fine (work in flight on other branches).
CRATES = {
    "gateway": [
        ("command line", ["cli"]),
        ("listeners", ["server"]),
        ("request path", ["proxy", "admin"]),
        ("front ends", ["endpoints", "pages"]),
        ("flows", ["auth"]),
        ("shared request state", ["app"]),
        ("answers", ["error", "http"]),
        (
            "domain",
            [
                "config", "db", "migrate", "users", "password", "sessions", "codes",
                "failures", "mail", "health", "clock", "readiness", "ratelimit", "path",
                "host", "headers", "redirect", "upstream", "body", "html", "tickets",
            ],
        ),
    ],
    "loadtest/src": [
        ("reports", ["soak"]),
        ("readers of runs", ["report", "sample", "select", "floor"]),
        ("runs", ["run"]),
        ("parts", ["seed", "smtp", "echo", "netem"]),
    ],
}

# Files that are crate roots, not modules.
ROOTS = {"lib", "main", "build"}

NAMED = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
GROUP = re.compile(r"\bcrate::\{")


def grouped_names(src, start):
    """The top-level names of the `crate::{...}` group whose `{` is at `start`."""
    depth, names, current = 0, [], ""
    for i in range(start, len(src)):
        c = src[i]
        if c == "{":
            depth += 1
            if depth == 1:
                continue
        elif c == "}":
            depth -= 1
            if depth == 0:
                names.append(current)
                break
        if depth == 1 and c == ",":
            names.append(current)
            current = ""
        elif depth >= 1:
            current += c
    return [n.strip().split("::")[0].split(" ")[0] for n in names if n.strip()]


def references(path):
    """(module name, line) for every `crate::` name in the file at `path`."""
    src = open(path, encoding="utf-8").read()
    line_of = lambda pos: src.count("\n", 0, pos) + 1
    found = [(m.group(1), line_of(m.start())) for m in NAMED.finditer(src)]
    for m in GROUP.finditer(src):
        found += [(n, line_of(m.start())) for n in grouped_names(src, m.end() - 1)]
    return found


def modules(crate_dir):
    """{top-level module: [(file, referenced module, line)]}"""
    out = {}
    for dirpath, _, files in os.walk(crate_dir):
        for f in sorted(files):
            if not f.endswith(".rs"):
                continue
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, crate_dir)
            top = rel.split(os.sep)[0].removesuffix(".rs")
            if top in ROOTS:
                continue
            refs = out.setdefault(top, [])
            refs += [(os.path.relpath(path, ROOT), name, line) for name, line in references(path)]
    return out


def cycles(graph):
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def check(crate, layers, quiet):
    crate_dir = os.path.join(ROOT, crate)
    layer_of = {m: i for i, (_, ms) in enumerate(layers) for m in ms}
    mods = modules(crate_dir)
    problems = []
    graph = {m: set() for m in mods}
    for m in sorted(mods):
        if m not in layer_of:
            problems.append(f"{crate}: module `{m}` has no layer: add it to {os.path.relpath(__file__, ROOT)}")
            continue
        for path, name, line in mods[m]:
            if name not in mods or name == m:
                continue
            graph[m].add(name)
            if name in layer_of and layer_of[name] < layer_of[m]:
                problems.append(
                    f"{path}:{line}: `{m}` ({layers[layer_of[m]][0]}) names `{name}`, "
                    f"a higher layer ({layers[layer_of[name]][0]})"
                )
    for component in cycles(graph):
        problems.append(f"{crate}: import cycle among " + " ".join(component))
    if not quiet:
        print(f"{crate}: {len(mods)} modules, highest layer first:")
        for name, ms in layers:
            present = [m for m in ms if m in mods]
            if present:
                print(f"  {name:22} {' '.join(present)}")
    return problems


def main():
    quiet = "-q" in sys.argv[1:]
    problems = []
    for crate, layers in CRATES.items():
        problems += check(crate, layers, quiet)
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    if problems:
        return 1
    if not quiet:
        print("ok: no cycle, and no module names a higher layer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
