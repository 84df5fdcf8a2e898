"""The Lambda layer carries only what runs in Lambda: the CLI and the local runtime are stripped from it
(``layers/regionha/Makefile``), and no handler, nor anything the layer ships, imports them.

The layer is built here as the Makefile builds it (copy ``regionha/``, remove what its ``rm -rf`` line
names), then every handler is imported from that copy alone, in a fresh interpreter that also refuses
``regionha.cli`` and ``regionha.local`` outright (an import hidden inside a function still shows in
the source check below).
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYER = ROOT / "layers" / "regionha"
FUNCTIONS = ROOT / "functions"
LOCAL_ONLY = {"cli", "local"}


def stripped_by_the_makefile() -> set[str]:
    """The package folders the layer's build removes (``rm -rf "$(ARTIFACTS_DIR)/python/regionha/X"``)."""
    text = (LAYER / "Makefile").read_text()
    return {m for line in text.splitlines() if line.strip().startswith("rm -rf")
            for m in re.findall(r"python/regionha/(\w+)", line)}


def build_layer(into: Path) -> Path:
    """``regionha/`` as the layer ships it: the Makefile's copy and removals, without pip."""
    package = into / "python" / "regionha"
    shutil.copytree(LAYER / "regionha", package, ignore=shutil.ignore_patterns("__pycache__"))
    for name in stripped_by_the_makefile():
        shutil.rmtree(package / name)
    return into / "python"


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function. (regionha uses no relative imports;
    one would show here as a module starting with ".", which is refused.)"""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            found.add(module)
            found |= {f"{module}.{alias.name}" for alias in node.names}
    return found


def local_only(module: str) -> bool:
    return any(module == f"regionha.{p}" or module.startswith(f"regionha.{p}.") for p in LOCAL_ONLY)


def test_the_layer_build_strips_the_cli_and_the_local_runtime() -> None:
    assert stripped_by_the_makefile() >= LOCAL_ONLY


def test_nothing_the_layer_ships_and_no_handler_imports_the_cli_or_the_local_runtime(tmp_path: Path) -> None:
    python = build_layer(tmp_path)
    shipped = sorted(python.rglob("*.py"))
    handlers = sorted(FUNCTIONS.glob("*/app.py"))
    assert len(handlers) >= 15 and len(shipped) >= 20
    offenders = {str(f): sorted(m for m in imported_modules(f) if local_only(m) or m.startswith("."))
                 for f in [*shipped, *handlers]}
    assert {f: m for f, m in offenders.items() if m} == {}


# Imports every handler from the built layer alone, with regionha.cli and regionha.local refused.
_IMPORT_ALL = """
import importlib.abc, importlib.util, json, sys
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[:2] in (["regionha", "cli"], ["regionha", "local"]):
            raise ImportError(f"{name} is not in the Lambda layer")
        return None
sys.meta_path.insert(0, Refuse())
loaded = {}
for i, app in enumerate(json.loads(sys.argv[1])):
    sys.path.insert(0, str(__import__("pathlib").Path(app).parent))
    spec = importlib.util.spec_from_file_location(f"handler_{i}", app)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.path.pop(0)
    loaded[app] = callable(getattr(module, "lambda_handler", None))
regionha = sorted(m for m in sys.modules if m == "regionha" or m.startswith("regionha."))
print(json.dumps({"loaded": loaded, "regionha": regionha, "file": sys.modules["regionha"].__file__}))
"""


@pytest.mark.slow
def test_every_handler_imports_from_the_layer_alone(tmp_path: Path) -> None:
    python = build_layer(tmp_path)
    handlers = [str(p) for p in sorted(FUNCTIONS.glob("*/app.py"))]
    # What the template gives each function, as dummies: some handlers read their table names at import.
    needed = {name for f in [*FUNCTIONS.glob("*/app.py"), *python.rglob("*.py")]
              for name in re.findall(r"os\.environ\[[\"'](\w+)[\"']\]", f.read_text())}
    env = {**{name: f"layer-test-{name.lower()}" for name in needed}, "PYTHONPATH": str(python),
           "PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": "ap-southeast-1",
           "AWS_REGION": "ap-southeast-1", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_EC2_METADATA_DISABLED": "true", "POWERTOOLS_TRACE_DISABLED": "true"}
    done = subprocess.run([sys.executable, "-c", _IMPORT_ALL, json.dumps(handlers)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["file"].startswith(str(python))  # the layer's copy, not the source tree
    assert all(result["loaded"].values()) and len(result["loaded"]) == len(handlers)
    assert not [m for m in result["regionha"] if local_only(m)]
