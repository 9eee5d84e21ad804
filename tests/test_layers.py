"""The architecture's layers, checked on the import statements of the package (developers' guide):
the library never imports the CLI; io/ knows no networks; networks take tensors, not files; the judge
(radiomics/) imports nothing of the methods it judges."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "diffusionct"

# (modules the rule applies to, module prefixes they must not import, why)
RULES = [
    ("", ("diffusionct.cli",), "the library never imports the command line"),
    ("io/", ("torch", "diffusionct.models", "diffusionct.methods.store", "diffusionct.methods", "diffusionct.diffusion",
             "diffusionct.train"), "io/ knows no networks"),
    ("models/", ("diffusionct.io", "diffusionct.methods.store", "safetensors", "pydicom", "SimpleITK"),
     "networks take tensors, not files"),
    ("radiomics/", ("diffusionct.models", "diffusionct.methods", "diffusionct.standardize", "diffusionct.standardize_runs",
                    "diffusionct.diffusion",
                    "diffusionct.train", "diffusionct.simulate", "diffusionct.methods.store", "diffusionct.evaluate"),
     "the judge imports nothing of what it judges"),
]


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def modules_under(prefix: str) -> list[Path]:
    files = sorted((PACKAGE / prefix).rglob("*.py"))
    return [p for p in files if p.relative_to(PACKAGE).parts[0] != "cli"] if prefix == "" else files


@pytest.mark.parametrize("prefix,forbidden,why", RULES, ids=[r[0] or "library" for r in RULES])
def test_layer_rule(prefix, forbidden, why):
    files = modules_under(prefix)
    assert files, f"no modules under {prefix!r}: the rule would check nothing"
    offences = [f"{path.relative_to(PACKAGE)} imports {name}" for path in files for name in sorted(imported_modules(path))
                if any(name == bad or name.startswith(bad + ".") for bad in forbidden)]
    assert not offences, f"{why}: " + "; ".join(offences)


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports anywhere (function bodies and type-only imports included)."""
    modules = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
               for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in imported_modules(path):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name and not name.startswith(imported + "."):  # its own package: already loading
                targets.add(imported)
        graph[name] = targets
    return graph


def test_no_import_circles():
    """No module reaches itself through its imports, lazy ones included: each concept sits in one layer."""
    graph = import_graph()
    circles = []
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            module, path = stack.pop()
            for target in graph[module]:
                if target == start:
                    circles.append(" -> ".join(path + [start]))
                elif target not in seen:
                    seen.add(target)
                    stack.append((target, path + [target]))
    assert not circles, "import circles: " + "; ".join(sorted(circles)[:5])


# what `standardize`, `features`, `evaluate` and a loaded model run: none may reach training code, by any import path
INFERENCE = ("diffusionct.standardize", "diffusionct.standardize_runs", "diffusionct.methods.registry", "diffusionct.evaluate",
             "diffusionct.methods.library", "diffusionct.radiomics.batch")


def test_no_module_on_the_inference_path_reaches_training_at_any_depth():
    """Statically, function-level imports included (the runtime test below sees only the paths one run takes)."""
    graph = import_graph()
    for start in INFERENCE:
        assert start in graph, f"{start} is not a module of the package: the rule would check nothing"
        stack, seen = [(start, [start])], {start}
        while stack:
            module, path = stack.pop()
            for target in graph[module]:
                assert not target.startswith("diffusionct.train"), " -> ".join(path + [target])
                if target not in seen:
                    seen.add(target)
                    stack.append((target, path + [target]))


def test_rule_checker_sees_an_offence(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from diffusionct.cli import main\n    import torch.nn\n")
    assert {"diffusionct.cli", "diffusionct.cli.main", "torch.nn"} <= imported_modules(bad)


def test_inference_never_imports_a_training_module():
    """Loading the shipped model and standardizing with it must not pull in train/ (a smaller, safer runtime)."""
    import subprocess
    import sys

    code = ("import sys, numpy as np\n"
            "from diffusionct.standardize import Standardizer\n"
            "s = Standardizer.load(None, 'cpu')\n"
            "s.standardize_slices(np.full((1, 64, 64), 40.0, np.float32), steps=1, pixel_mm=0.7)\n"
            "loaded = sorted(m for m in sys.modules if m.startswith('diffusionct.train'))\n"
            "assert 'diffusionct.methods' in sys.modules\n"
            "print('TRAIN:' + ','.join(loaded))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "TRAIN:\n" in out.stdout, out.stdout


# the same words as other things: "ddpm" also names a sampler, "diffusionct" the tool (its logger, program, metadata)
OTHER_MEANINGS = {"ddpm": {"diffusion.py", "config.py"}, "diffusionct": {"cli/__init__.py", "cli/features.py", "methods/store.py"}}


def test_method_names_are_spelled_once():
    """Every other module takes a method's name from diffusionct.methods (a renamed method cannot leave a stale copy)."""
    from diffusionct.methods import METHODS

    spelled = []
    for path in sorted(PACKAGE.rglob("*.py")):  # the command line too
        relative = path.relative_to(PACKAGE).as_posix()
        if relative == "methods/__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and node.value in METHODS and relative not in OTHER_MEANINGS.get(node.value, ()):
                spelled.append(f"{relative}:{node.lineno} '{node.value}'")
    assert not spelled, "method names spelled outside diffusionct.methods: " + "; ".join(spelled)
