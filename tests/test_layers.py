"""The package's structure, read from its imports (docs/architecture.md#layers).

The import graph of ``dsrecon/`` is built with ``ast`` from every import statement, at module level
and inside functions alike (a deferred import is still a dependency). Three rules, no exceptions:

- no import cycle between modules;
- no import from a lower layer to a higher one (LAYERS, lowest first; within a layer the imports
  must be acyclic, which the first rule checks);
- no ``from X import _name`` of another module's private name (a private module such as
  ``dsrecon._util`` may be imported, by the modules of the package it sits in);
- options.py imports only the standard library (besides dsrecon's lowest layer).

Plain text reading only: nothing of dsrecon is imported.
"""

from __future__ import annotations

import ast
import sys
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "dsrecon"

#: the layers, lowest first: a module may import from its own layer and the ones before it. A name is
#: a subpackage or top-level module of dsrecon; "dsrecon" is the package's lazy facade (__init__.py).
LAYERS: list[tuple[str, ...]] = [
    ("errors", "_interrupt", "_util"),  # exceptions, interrupt flag, atomic files, hashing, seeding
    ("options",),  # every option of a fit, declared once (plain Python: no torch)
    ("io", "signal", "systems"),  # recordings and run directories; kernels, deconvolution; benchmark systems
    ("models",),  # the latent backends, decoder, noise model, device
    ("metrics",),  # D_stsp, D_H, Lyapunov spectra, yardsticks
    ("evaluation",),  # a run's scorecard
    ("training", "plots"),  # the engine; figures and the HTML report
    ("estimators", "api", "group", "ensemble", "dsrecon"),  # ConvSSM, GroupConvSSM, ensembles; the facade
    ("distributed",),  # cohorts and sweeps
    ("cli",),  # the commands
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


@lru_cache(maxsize=None)
def modules() -> dict[str, Path]:
    """Every module of dsrecon by dotted name (a package by its __init__.py)."""
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        parts = p.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "dsrecon"


@lru_cache(maxsize=None)
def imports() -> list[tuple[str, str, str | None, int]]:
    """(importer, imported module, imported name or None, line) for every import of a dsrecon module.
    ``from P import x`` where P.x is a module counts as an import of P.x."""
    mods = modules()
    out = []
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                out += [(mod, a.name, None, node.lineno) for a in node.names if a.name.split(".")[0] == "dsrecon"]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                if source.split(".")[0] != "dsrecon":
                    continue
                for a in node.names:
                    sub = f"{source}.{a.name}"
                    out.append((mod, sub, None, node.lineno) if sub in mods else (mod, source, a.name, node.lineno))
    return out


def graph() -> dict[str, set[str]]:
    g: dict[str, set[str]] = {m: set() for m in modules()}
    for src, dst, _, _ in imports():
        if dst != src and dst in g:
            g[src].add(dst)
    return g


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_every_part_of_the_package_has_a_layer():
    missing = sorted({layer_of(m) for m in modules()} - set(RANK))
    assert not missing, f"modules of dsrecon in no layer (add them to LAYERS and docs/architecture.md#layers): {missing}"


def test_no_import_cycles():
    g = graph()
    found = []
    for comp in cycles(g):
        members = set(comp)
        edges = sorted(f"{a} -> {b}" for a in comp for b in g[a] if b in members)
        found.append(f"{' ↔ '.join(comp)}: {', '.join(edges)}")
    assert not found, "import cycles:\n" + "\n".join(found)


def test_no_imports_from_a_higher_layer():
    bad = sorted({f"{src}:{line} imports {dst} ({layer_of(src)} below {layer_of(dst)})"
                  for src, dst, _, line in imports()
                  if layer_of(dst) in RANK and layer_of(src) in RANK and RANK[layer_of(dst)] > RANK[layer_of(src)]})
    assert not bad, "imports from a higher layer:\n" + "\n".join(bad)


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_no_imports_of_private_names():
    bad = []
    for src, dst, name, line in imports():
        if name is not None and _private(name) and dst != src:
            bad.append(f"{src}:{line} imports {dst}.{name}")
        parent, _, last = dst.rpartition(".")
        if name is None and _private(last) and not (src == parent or src.startswith(parent + ".")):
            bad.append(f"{src}:{line} imports {dst}, private to {parent}")
    assert not bad, "imports of private names:\n" + "\n".join(sorted(set(bad)))


def test_options_import_only_the_standard_library():
    """Every option is declared in options.py, which the CLI reads to build its parameters: it loads
    no torch or numpy (the device is models/device.py's, the forcing schedule training/gtf.py's)."""
    path = PKG / "options.py"
    outside = sorted({name.split(".")[0] for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                      for name in ([a.name for a in node.names] if isinstance(node, ast.Import) else
                                   [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
                      if name.split(".")[0] not in sys.stdlib_module_names | {"dsrecon"}})
    assert not outside, f"dsrecon/options.py imports {outside}"


def test_the_rules_see_the_code():
    """The checks above run on the real graph: deferred imports are found, the layers are used."""
    found = {(src, dst) for src, dst, _, _ in imports()}
    assert ("dsrecon.cli.report", "dsrecon.plots.report") in found  # an import inside a function
    assert len(found) > 200
    used = {layer_of(m) for m in modules()}
    assert all(used & set(layer) for layer in LAYERS), "a layer with no module of the package"
