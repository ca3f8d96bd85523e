"""benchmarks/ keeps its shape: maintained scripts listed, one-off experiments frozen apart.

Text and syntax-tree reading only (no benchmark runs, no imports of the scripts).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
EXPERIMENTS = BENCH / "experiments"


def maintained() -> list[Path]:
    return sorted(p for p in BENCH.glob("*.py") if not p.name.startswith("_"))


def experiments() -> list[Path]:
    return sorted(EXPERIMENTS.glob("*.py"))


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_no_script_edits_the_import_path():
    bad = [str(p.relative_to(ROOT)) for p in sorted(BENCH.rglob("*.py"))
           if re.search(r"sys\.path\.(insert|append)|sys\.path\s*[+]?=", p.read_text(encoding="utf-8"))]
    assert not bad, f"sys.path edited in {bad}: import shared helpers from benchmarks/_common.py"


def test_maintained_scripts_import_no_experiment():
    frozen = {p.stem for p in experiments()}
    bad = {str(p.relative_to(ROOT)): sorted(imported_modules(p) & frozen) for p in [*maintained(), BENCH / "_common.py"]}
    assert not {k: v for k, v in bad.items() if v}


def test_readme_lists_every_script():
    readme = (BENCH / "README.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"`([\w.]+\.(?:py|sh))`", readme))
    scripts = {p.name for p in [*maintained(), *experiments(), *BENCH.glob("*.sh")]}
    assert scripts <= listed, f"not in benchmarks/README.md: {sorted(scripts - listed)}"


def test_every_experiment_names_its_commit_and_its_results():
    bad = []
    for p in experiments():
        head = "\n".join(p.read_text(encoding="utf-8").splitlines()[:4])
        if not re.search(r"last ran at [0-9a-f]{7}", head) or "docs/" not in head:
            bad.append(p.name)
    assert not bad, f"no 'last ran at COMMIT' and results link in the first lines of {bad}"
