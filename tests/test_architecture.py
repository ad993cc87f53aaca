"""docs/ARCHITECTURE.md held to the code: the import contracts and the invariant references.

The layers are import-linter contracts in ``pyproject.toml``; this test runs them so that
``make test`` fails when a module imports across a layer, makes a cycle, when ``tiling``
imports torch or the model, or when anything outside ``geounet.cli`` imports click.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"


def _lint_imports(config: Path) -> subprocess.CompletedProcess[str]:
    """Run import-linter on ``config`` against this checkout's ``geounet``."""
    try:
        import importlinter  # noqa: F401
    except ImportError:  # pragma: no cover - the test extra installs it
        pytest.fail("import-linter is missing: install the test extra (pip install -e '.[test]')")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    code = (
        "import sys; from importlinter.cli import lint_imports_command as run; "
        "run(['--no-cache', '--no-logo', sys.argv[1]])"
    )
    return subprocess.run(
        [sys.executable, "-c", code, str(config)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_import_contracts_are_kept() -> None:
    result = _lint_imports(ROOT / "pyproject.toml")
    report = result.stdout + result.stderr
    assert result.returncode == 0, f"import contracts broken (see docs/ARCHITECTURE.md):\n{report}"
    kept = re.search(r"Contracts: (\d+) kept, (\d+) broken", report)
    assert kept is not None, report
    assert int(kept.group(1)) >= 4 and kept.group(2) == "0", report


def _invariant_numbers() -> dict[int, str]:
    """``{N: section text}`` of the numbered invariants in docs/ARCHITECTURE.md."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    section = text.split("## Invariants", 1)[1].split("\n## ", 1)[0]
    parts = re.split(r"^(\d+)\. ", section, flags=re.MULTILINE)
    return {int(n): body for n, body in zip(parts[1::2], parts[2::2])}


def _repo_texts() -> list[tuple[Path, str]]:
    files = [*ROOT.glob("geounet/**/*.py"), *ROOT.glob("tests/**/*.py")]
    files += [*ROOT.glob("docs/*.md"), ROOT / "README.md"]
    files += [*ROOT.glob("examples/**/*.py"), *ROOT.glob("benchmarks/**/*.py")]
    files += [*ROOT.glob("benchmarks/*.md"), *ROOT.glob("workflows/**/*")]
    return [(p, p.read_text(encoding="utf-8")) for p in files if p.is_file()]


def test_every_invariant_reference_points_into_architecture_md() -> None:
    numbers = _invariant_numbers()
    assert sorted(numbers) == list(range(1, len(numbers) + 1)), sorted(numbers)
    outside = []
    here = Path(__file__).resolve()
    for path, text in _repo_texts():
        if path != here and ("DESIGN invariant" in text or "DESIGN.md" in text):
            outside.append(str(path.relative_to(ROOT)))
        for ref in re.findall(r"ARCHITECTURE invariants? ([\d, and]+)", text):
            for n in map(int, re.findall(r"\d+", ref)):
                assert n in numbers, f"{path.relative_to(ROOT)} cites ARCHITECTURE invariant {n}"
    assert not outside, f"references to the old DESIGN document remain in {outside}"


def test_every_invariant_names_tests_that_exist() -> None:
    """Each invariant names its guarding tests as ``tests/test_x.py::test_name``; they exist."""
    for number, body in _invariant_numbers().items():
        named = re.findall(r"`(tests/test_\w+\.py)::(test_\w+)`", body)
        assert named, f"ARCHITECTURE invariant {number} names no test"
        for path, name in named:
            source = (ROOT / path).read_text(encoding="utf-8")
            assert re.search(rf"^\s*(async )?def {name}\(", source, re.MULTILINE), (
                f"ARCHITECTURE invariant {number} names {path}::{name}, which does not exist"
            )


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _private_module_owner(dotted: str) -> str | None:
    """The package a private module of ``dotted`` belongs to (``geounet.p._m`` -> ``geounet.p``),
    or None when no component of ``dotted`` is private."""
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if _private(part):
            return ".".join(parts[:i])
    return None


def _is_module(dotted: str) -> bool:
    base = ROOT.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def private_imports_across_modules() -> list[str]:
    """``path:line: what`` for every import under ``geounet/`` that breaks the rule in
    docs/ARCHITECTURE.md, "One import path per name"."""
    import ast

    found = []
    for path in sorted((ROOT / "geounet").rglob("*.py")):
        rel = path.relative_to(ROOT)
        parts = list(rel.with_suffix("").parts)
        face = parts[-1] == "__init__"
        me = ".".join(parts[:-1] if face else parts)
        package = me if face else me.rpartition(".")[0]

        def inside(owner: str) -> bool:
            return package == owner or package.startswith(owner + ".")

        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(rel))):
            if isinstance(node, ast.Import):
                targets = [(a.name, None) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [(node.module, a.name) for a in node.names]
            else:
                continue
            for module, name in targets:
                if module != "geounet" and not module.startswith("geounet."):
                    continue
                dotted = module if name is None else f"{module}.{name}"
                if name is not None and not _is_module(dotted):
                    owner = _private_module_owner(module)
                    if _private(name) and not (face and module.startswith(me + ".")):
                        found.append(f"{rel}:{node.lineno}: private name {dotted}")
                        continue
                else:
                    owner = _private_module_owner(dotted)
                if owner is not None and not inside(owner):
                    found.append(f"{rel}:{node.lineno}: private module {dotted}")
    return found


def test_no_private_name_is_imported_across_modules() -> None:
    """One import path per name (docs/ARCHITECTURE.md): a leading-underscore name is used only
    in its module (or re-exported by its package's face), a private module only in its package."""
    found = private_imports_across_modules()
    assert not found, "private names imported across modules (make them public at home):\n" + \
        "\n".join(found)


def test_every_test_the_readme_names_exists() -> None:
    """Each promise row of the README names tests; a renamed or deleted test breaks this."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    named, missing = 0, []
    for row in text.splitlines():
        current = None
        for match in re.finditer(r"(tests/[\w/]+\.py)?::(\w+)", row):
            path, name = match.group(1), match.group(2)
            current = path or current
            if current is None:
                continue
            named += 1
            if not re.search(rf"^def {name}\(", (ROOT / current).read_text(encoding="utf-8"),
                             re.MULTILINE):
                missing.append(f"{current}::{name}")
    assert named > 20 and not missing, missing


MAX_MODULE_LINES = 500
"""No module under geounet/ longer than this (issue 18)."""
MAX_FUNCTION_BODY = 60
"""No function body longer than this: lines from its first statement after the docstring to
its last line, comments and blank lines included."""

# Over the limits (none since issue 18's phase 2: the options objects, the run/batch split);
# each entry must still be over, so the lists only shrink. Keep them empty, never extend them.
LONG_MODULES: set[str] = set()
LONG_FUNCTIONS: set[str] = set()


def _function_bodies() -> dict[str, int]:
    """``path::qualified.name`` -> body lines of every function and method under geounet/."""
    import ast

    found: dict[str, int] = {}

    def visit(node: ast.AST, rel: str, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = child.body
                docstring = (len(body) > 1 and isinstance(body[0], ast.Expr)
                             and isinstance(body[0].value, ast.Constant)
                             and isinstance(body[0].value.value, str))
                first = body[1] if docstring else body[0]
                found[f"{rel}::{prefix}{child.name}"] = child.end_lineno - first.lineno + 1
                visit(child, rel, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, rel, f"{prefix}{child.name}.")
            else:
                visit(child, rel, prefix)

    for path in sorted((ROOT / "geounet").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        visit(ast.parse(path.read_text(encoding="utf-8"), rel), rel, "")
    return found


def test_no_module_over_500_lines() -> None:
    lengths = {path.relative_to(ROOT).as_posix(): len(path.read_text(encoding="utf-8")
                                                      .splitlines())
               for path in (ROOT / "geounet").rglob("*.py")}
    long = {p for p, n in lengths.items() if n > MAX_MODULE_LINES}
    assert long <= LONG_MODULES, (
        f"modules over {MAX_MODULE_LINES} lines: split them into cohesive modules: "
        f"{ {p: lengths[p] for p in sorted(long - LONG_MODULES)} }")
    assert LONG_MODULES <= long, (
        f"{sorted(LONG_MODULES - long)} are no longer over {MAX_MODULE_LINES} lines: remove "
        "them from LONG_MODULES")


def test_no_function_body_over_60_lines() -> None:
    bodies = _function_bodies()
    long = {name for name, n in bodies.items() if n > MAX_FUNCTION_BODY}
    assert long <= LONG_FUNCTIONS, (
        f"function bodies over {MAX_FUNCTION_BODY} lines: extract helpers: "
        f"{ {name: bodies[name] for name in sorted(long - LONG_FUNCTIONS)} }")
    assert LONG_FUNCTIONS <= long, (
        f"{sorted(LONG_FUNCTIONS - long)} are no longer over {MAX_FUNCTION_BODY} lines: "
        "remove them from LONG_FUNCTIONS")


# The rules that exist once (issue 18, "one home per rule"): the functions of geounet.output
# that publish a finished store or read its resume state are called from one module only.
ONE_HOME: dict[str, str] = {
    # publishing a raster: finalize + move into place, COG, upload, onto the scene's grid
    "finalize_store": "geounet/run/store.py",
    "replace_path": "geounet/run/store.py",
    "write_cog": "geounet/run/store.py",
    "regrid_store": "geounet/run/store.py",
    # resume bookkeeping: is the store resumable, which chunks ran their tiles
    "check_resumable": "geounet/run/store.py",
    "seam_data_chunks": "geounet/run/store.py",
    # the scheduler: what users pass -> one variant (the orchestration matches on its type)
    "configured_address": "geounet/distributed/schedulers.py",
}


def _callers() -> dict[str, set[str]]:
    """Function name -> modules under geounet/ (outside geounet/output/, which defines them)
    that call it, by name or as an attribute."""
    import ast

    found: dict[str, set[str]] = {name: set() for name in ONE_HOME}
    for path in sorted((ROOT / "geounet").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("geounet/output/"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), rel)):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name in found:
                    found[name].add(rel)
    return found


def test_publishing_resume_and_scheduler_rules_have_one_home() -> None:
    """A second publisher (batch writing its own COG or moving its own store), a second
    resume rule or a second reading of the scheduler address fails here."""
    callers = _callers()
    strays = {name: sorted(mods - {ONE_HOME[name]}) for name, mods in callers.items()
              if mods - {ONE_HOME[name]}}
    assert not strays, f"called outside their one home: {strays}"
    assert callers["write_cog"] == callers["check_resumable"] == {"geounet/run/store.py"}


def test_no_scheduler_is_chosen_by_comparing_strings() -> None:
    """The scheduler names ("threads", "synchronous") are turned into variants in one place
    (distributed/schedulers.py; the CLI's deprecated --scheduler-address alias aside): no
    module compares a value with them."""
    import ast

    names = {"threads", "synchronous"}
    found = []
    for path in sorted((ROOT / "geounet").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel in ("geounet/distributed/schedulers.py", "geounet/cli/options.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), rel)):
            if isinstance(node, ast.Compare):
                values = [node.left, *node.comparators]
                consts = {v.value for v in values if isinstance(v, ast.Constant)}
                consts |= {e.value for v in values if isinstance(v, (ast.Tuple, ast.Set))
                           for e in v.elts if isinstance(e, ast.Constant)}
                if consts & names:
                    found.append(f"{rel}:{node.lineno}")
    assert not found, f"scheduler chosen by string comparison at {found}"
