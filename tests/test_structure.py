"""The layout shows the architecture: layers import downwards only
(common <- records <- extract, rnn <- entry points), and no two modules
import each other."""

import ast
import sys

from conftest import REPO, run

# What each package may import of the project's own (besides itself).
LAYERS = {"common": set(), "records": {"common"}, "extract": {"common", "records"},
          "rnn": {"common", "records"}}


def _project_modules():
    """Module name -> path of every project module outside tests and benchmarks."""
    modules = {}
    for package in LAYERS:
        for path in (REPO / package).glob("*.py"):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            modules[name] = path
    for script in ("train", "predict"):
        modules[script] = REPO / f"{script}.py"
    return modules


def _imports(path, modules):
    """The project modules a file imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        found.update(name for name in names if name in modules)
    return found


def test_layers_import_downwards_only():
    modules = _project_modules()
    for name, path in modules.items():
        package = name.split(".")[0]
        if package not in LAYERS:
            continue
        reached = {imported.split(".")[0] for imported in _imports(path, modules)} - {package}
        assert reached <= LAYERS[package], f"{name} imports {sorted(reached - LAYERS[package])}"


def test_no_two_modules_import_each_other():
    modules = _project_modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    mutual = sorted({tuple(sorted((a, b))) for a, targets in graph.items() for b in targets if a in graph.get(b, ())})
    assert mutual == []


def test_importing_records_imports_nothing_of_extract_or_rnn():
    result = run([sys.executable, "-c", "import sys, records.reader, records.writer, records.inspect, "
                  "records.manifest, records.files, records.schema; "
                  "print(sorted(m for m in sys.modules if m.split('.')[0] in ('extract', 'rnn', 'train')))"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
