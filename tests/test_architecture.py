"""The shape of the code base, kept by a test: one-way layers (docs/architecture.md), no function-level import of
betterconv's own modules (only optional third-party dependencies are imported lazily), no private name imported
from another module, and the benchmarks on the public API only."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "betterconv"

BASE = {"errors", "files"}
MIDDLE = {"data", "tasks", "interop", "engine", "deploy", "analysis"}
# layer -> the layers it may import (its own included); lowest first, as docs/architecture.md draws them
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "files": {"errors"},
    "layers": BASE,
    "models": BASE | {"layers"},
    "data": BASE | {"layers", "models"},
    "engine": BASE | {"layers", "models"},
    "tasks": BASE | {"layers", "models", "data"},
    "interop": BASE | {"layers", "models", "data"},
    "deploy": BASE | {"layers", "models", "data", "tasks"},
    "analysis": BASE | {"layers", "models", "data", "tasks", "interop", "engine", "deploy"},
    "weights": BASE | {"layers", "models"} | MIDDLE,
    "report": BASE | {"layers", "models", "weights"} | MIDDLE,
    "commands": BASE | {"layers", "models", "weights", "report"} | MIDDLE,
    "cli": {"errors", "commands"},
    "__main__": {"cli"},
    "__init__": BASE | {"layers", "models", "weights"} | MIDDLE,
}


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.append((".".join(parts), path))
    return out


def _layer(module: str) -> str:
    """betterconv.models.fcn -> models; betterconv -> __init__; betterconv.weights -> weights."""
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def _imports(module: str, path: Path):
    """(target module, imported names, line, at module level) for every import of a betterconv module."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    top_level = {id(node) for node in tree.body}
    for node in tree.body:  # `if TYPE_CHECKING:` imports are for type checkers only, never run
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            top_level |= {id(child) for child in node.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            target, names = "", []
            for alias in node.names:
                if alias.name.split(".")[0] == "betterconv":
                    target = alias.name
        else:
            continue
        if target.split(".")[0] == "betterconv":
            yield target, names, node.lineno, id(node) in top_level


def test_every_module_has_a_layer():
    unknown = sorted({_layer(m) for m, _ in _modules()} - set(ALLOWED))
    assert not unknown, f"modules outside the documented layers: {unknown} (add them to docs/architecture.md)"


def test_imports_go_down_the_layers_only():
    upward = []
    for module, path in _modules():
        source = _layer(module)
        for target, names, line, _ in _imports(module, path):
            targets = [target] if target != "betterconv" else [f"betterconv.{n}" for n in names]
            for t in targets:
                layer = _layer(t)
                if layer != source and layer not in ALLOWED[source]:
                    upward.append(f"{path.relative_to(ROOT)}:{line} ({source}) imports {t} ({layer})")
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_no_function_level_import_of_betterconv():
    """A function-level import may only keep an optional third-party dependency lazy, never dodge a circle."""
    late = [f"{path.relative_to(ROOT)}:{line} imports {target}" for module, path in _modules()
            for target, _, line, top in _imports(module, path) if not top]
    assert not late, "function-level imports of betterconv modules:\n" + "\n".join(late)


def _private_names(path: Path, module: str):
    for target, names, line, _ in _imports(module, path):
        for name in names:
            if name.startswith("_") and not name.startswith("__"):
                yield f"{path.relative_to(ROOT)}:{line} imports {name} from {target}"


def test_no_private_name_crosses_a_module():
    found = [hit for module, path in _modules() for hit in _private_names(path, module)]
    assert not found, "private names imported from another module:\n" + "\n".join(found)


@pytest.mark.parametrize("script", sorted((ROOT / "benchmarks").glob("*.py")), ids=lambda p: p.name)
def test_benchmarks_use_the_public_api(script: Path):
    found = list(_private_names(script, "benchmarks"))
    private_modules = [f"{script.name}:{line} imports {target}" for target, _, line, _ in _imports("benchmarks", script)
                       if any(part.startswith("_") for part in target.split(".")[1:])]
    assert not found + private_modules, "\n".join(found + private_modules)


def test_the_architecture_test_sees_upward_imports(tmp_path: Path):
    """The walker itself: a relative import two levels up from a model resolves to the command layer."""
    fake = tmp_path / "betterconv" / "models" / "bad.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("from ..commands._common import parse_model_args\n\ndef f():\n    from ..cli import main\n")
    found = list(_imports("betterconv.models.bad", fake))
    assert [(t, top) for t, _, _, top in found] == [("betterconv.commands._common", True), ("betterconv.cli", False)]
    assert "commands" not in ALLOWED["models"] and "cli" not in ALLOWED["models"]
