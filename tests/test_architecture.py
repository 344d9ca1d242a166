"""The layout's rules, checked on the source (see the README's map and docs/architecture.md).

Data flows one way: ui / cli / assistant -> studio service -> training, serving client,
store -> engine. These tests read the code with ``ast`` (nothing is imported except
where a test says so), so a rule broken anywhere fails here with the file and line.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections import defaultdict
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 600
# third-party libraries that make an import slow (seconds, hundreds of MB): imported
# lazily, where a light module must reach them, and only there
HEAVY_LIBRARIES = {"torch", "transformers", "peft", "trl", "gradio", "datasets", "accelerate", "safetensors",
                   "gguf", "langchain", "langchain_core", "langchain_openai", "uvicorn", "numpy"}
# the entry points that build Settings from the environment; everything else is handed one
SETTINGS_EDGES = {"backend/cli.py", "backend/cli_ratings.py", "backend/training/worker.py", "backend/settings.py"}


def source_files() -> list[Path]:
    return sorted(p for folder in ("backend", "ui") for p in (ROOT / folder).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def project_modules() -> dict[str, Path]:
    return {module_name(p): p for p in source_files()}


class Import:
    def __init__(self, module: str, names: list[str], line: int, local: bool, function: str | None):
        self.module, self.names, self.line, self.local, self.function = module, names, line, local, function


@cache
def imports_of(path: Path) -> tuple[Import, ...]:
    """Every import in ``path``: the module, the names taken, the line, and whether it
    sits inside a function (and which)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    own = module_name(path)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    found: list[Import] = []

    def visit(node, function):
        for child in ast.iter_child_nodes(node):
            inner = function
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inner = f"{function}.{child.name}" if function else child.name
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.append(Import(alias.name, [], child.lineno, function is not None, function))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - child.level + 1]
                    module = ".".join(base + ([child.module] if child.module else []))
                else:
                    module = child.module or ""
                found.append(Import(module, [a.name for a in child.names], child.lineno, function is not None,
                                    function))
            visit(child, inner)

    visit(tree, None)
    return tuple(found)


def targets(imp: Import) -> list[str]:
    """The project modules an import reaches (``from pkg import mod`` reaches ``pkg.mod``)."""
    modules = project_modules()
    reached = []
    for name in imp.names:
        if f"{imp.module}.{name}" in modules:
            reached.append(f"{imp.module}.{name}")
    if imp.module in modules and (len(reached) < len(imp.names) or not imp.names):
        reached.append(imp.module)
    return reached


def edges(local: bool = True) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in project_modules().items():
        for imp in imports_of(path):
            if imp.local and not local:
                continue
            for target in targets(imp):
                if target != name and not _empty_package(target):
                    graph[name].add(target)
    return graph


def _empty_package(name: str) -> bool:
    path = project_modules()[name]
    if path.name != "__init__.py":
        return False
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return not any(isinstance(node, (ast.Import, ast.ImportFrom)) for node in ast.walk(tree))


def where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT)}:{line}"


# --- size -----------------------------------------------------------------------------------


def test_no_module_is_over_600_lines():
    long = {str(p.relative_to(ROOT)): n for p in source_files() + sorted((ROOT / "bench").glob("*.py"))
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by job): {long}"


# --- who imports whom -----------------------------------------------------------------------


def test_no_import_cycles():
    """No cycle among project modules, counting imports inside functions too."""
    graph = edges(local=True)
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []
    counter = [0]

    def strongconnect(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                strongconnect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(10000)
    for node in list(project_modules()):
        if node not in index:
            strongconnect(node)
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("source, forbidden, why", [
    ("backend.serving", "backend.training", "serving imports nothing from training"),
    ("backend.serving", "backend.store", "the engine never touches the database"),
    ("backend.serving", "backend.studio", "data flows one way: studio -> serving client -> engine"),
    ("backend.training", "backend.studio", "data flows one way: studio -> training"),
    ("backend.training", "backend.serving", "training runs in its own process, apart from the endpoint"),
    ("backend.data", "backend.training", "the data doctor is below training"),
    ("backend.data", "backend.serving", "the data doctor is below serving"),
    ("backend.bases", "backend.training", "bases are below training"),
    ("backend.bases", "backend.serving", "bases are below serving"),
    ("backend.proof", "backend.training", "the proof judges adapters; it does not train (training calls it)"),
    ("backend.proof", "backend.studio", "the proof is below the studio, so the training worker can run it"),
    ("backend.proof", "backend.serving", "the proof runs its own model, apart from the endpoint"),
    ("backend", "ui", "the backend is importable and testable without the page"),
])
def test_data_flows_one_way(source, forbidden, why):
    wrong = []
    for name, path in project_modules().items():
        if not (name == source or name.startswith(source + ".")):
            continue
        if source == "backend" and name == "backend.up":
            continue  # `tunelab up` starts the page: the one backend module that knows ui
        for imp in imports_of(path):
            for target in targets(imp) or [imp.module]:
                if target == forbidden or target.startswith(forbidden + "."):
                    wrong.append(f"{where(path, imp.line)} imports {target}")
    assert not wrong, f"{why}: " + "; ".join(wrong)


def test_the_page_calls_only_the_studio():
    """ui/ reaches the backend through the studio service and session (plus the typed
    definitions and errors every edge shares), never the store, training or serving."""
    allowed = ("backend.studio", "backend.errors", "backend.hparams", "backend.settings", "backend.names")
    wrong = []
    for name, path in project_modules().items():
        if not name.startswith("ui"):
            continue
        for imp in imports_of(path):
            for target in targets(imp):
                if target.startswith("backend") and not target.startswith(allowed):
                    wrong.append(f"{where(path, imp.line)} imports {target}")
    assert not wrong, "; ".join(wrong)


def test_no_module_takes_another_modules_private_names():
    wrong = []
    for name, path in project_modules().items():
        for imp in imports_of(path):
            if imp.module != name and imp.module.split(".")[0] in ("backend", "ui"):
                wrong += [f"{where(path, imp.line)} takes {imp.module}.{n}" for n in imp.names
                          if n.startswith("_") and not n.startswith("__")]
    assert not wrong, "; ".join(wrong)


def test_imports_sit_at_the_top_except_the_lazy_seams():
    """A function-local import is allowed only where it keeps a light module light: a heavy
    library, or a project module that imports one at its top (a lazy seam)."""
    modules = project_modules()

    @cache
    def heavy(module: str) -> bool:
        if module.split(".")[0] in HEAVY_LIBRARIES:
            return True
        if module not in modules:
            return False
        return any(not imp.local and (imp.module.split(".")[0] in HEAVY_LIBRARIES
                                      or any(heavy(t) for t in targets(imp) if t != module))
                   for imp in imports_of(modules[module]))

    wrong = []
    for name, path in modules.items():
        for imp in imports_of(path):
            if imp.local and not (heavy(imp.module) or any(heavy(t) for t in targets(imp))):
                wrong.append(f"{where(path, imp.line)} ({imp.function}) imports {imp.module} inside a function")
    assert not wrong, "imports to move to the top of their file: " + "; ".join(wrong)


def test_settings_come_from_settings_py_and_are_built_at_the_edges():
    """Every TUNELAB_* value is read through backend/settings.py, and Settings() is built
    only by the entry points (CLI, job worker); everything else is handed the settings."""
    read_env = re.compile(r"""(environ\.get\(|environ\[|getenv\()\s*["']TUNELAB_""")
    wrong = []
    for path in source_files():
        rel = str(path.relative_to(ROOT))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if read_env.search(line) and rel != "backend/settings.py":
                wrong.append(f"{rel}:{number} reads a TUNELAB_ variable itself")
            if re.search(r"\bSettings\(\)", line) and rel not in SETTINGS_EDGES:
                wrong.append(f"{rel}:{number} builds Settings() itself")
    assert not wrong, "; ".join(wrong)


def test_importing_the_cli_and_the_service_loads_no_model_library():
    """`tunelab --help`, the service and the serving client stay cheap to import."""
    code = ("import sys, backend, backend.cli, backend.studio.service, backend.serving.client; "
            "heavy = sorted(m for m in ('torch', 'transformers', 'peft', 'trl', 'gradio') if m in sys.modules); "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "", f"importing the CLI loaded: {out.stdout.strip()}"


# --- the map (docs/architecture.md) -----------------------------------------------------------------------


def readme_tree() -> dict[str, str]:
    """The annotated tree of docs/architecture.md ("The map", linked from the README's
    package map): path -> its one-line purpose."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- tree -->\s*```[a-z]*\n(.*?)```", text, re.S)
    assert block, "docs/architecture.md has no annotated tree (a ``` block after <!-- tree -->)"
    listed, folders, twice = {}, [], []
    for raw in block.group(1).splitlines():
        match = re.match(r"^( *)(\S+)\s*(.*)$", raw)
        if not match:
            continue
        depth = len(match.group(1)) // 2
        name, purpose = match.group(2), match.group(3)
        folders = folders[:depth]
        path = "/".join(folders + [name.rstrip("/")])
        if name.endswith("/"):
            folders.append(name.rstrip("/"))
        if path in listed:
            twice.append(path)
        listed[path] = purpose if purpose or not name.endswith("/") else "(folder)"
    assert not twice, f"the map (docs/architecture.md) lists these paths twice: {twice}"
    return listed


def test_the_readme_tree_lists_every_module_and_nothing_that_is_not_there():
    listed = readme_tree()
    missing_on_disk = sorted(p for p in listed if not (ROOT / p).exists())
    assert not missing_on_disk, f"the map (docs/architecture.md) lists paths that do not exist: {missing_on_disk}"
    unlisted = sorted(str(p.relative_to(ROOT)) for p in source_files() + [ROOT / "backend/training/cpu/kernels.c"]
                      if p.name != "__init__.py" and str(p.relative_to(ROOT)) not in listed)
    assert not unlisted, f"modules missing from the map in docs/architecture.md: {unlisted}"
    undescribed = sorted(p for p, purpose in listed.items() if not purpose)
    assert not undescribed, f"tree entries without a purpose: {undescribed}"


def test_the_readme_links_only_to_files_that_exist_and_stays_a_front_door():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(((?!https?://|#)[^)\s]+)\)", text)
    assert links, "the README links into docs/"
    missing = sorted(link for link in links if not (ROOT / link.split("#")[0]).exists())
    assert not missing, f"README links to missing files: {missing}"
    assert len(text.encode("utf-8")) <= 16 * 1024, "the README is a front door: depth goes in docs/"
