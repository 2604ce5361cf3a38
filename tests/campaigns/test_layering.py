"""The layering of the campaigns app, read from the source with ``ast`` (every import,
top-level or inside a function): models import nothing above them, and campaigns never
imports packages (the dependency runs packages → campaigns)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CAMPAIGNS = ROOT / "campaigns"


def imported_modules(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, dotted module) of every import in the file, relative ones made absolute."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            # ``from campaigns import services`` imports the module campaigns.services.
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
            found.append((node.lineno, base))
    return found


def above_models(module: str) -> bool:
    """A module the models may not import: workflow, delivery, any services or forms."""
    parts = module.split(".")
    return parts[:2] in (["campaigns", "workflow"], ["campaigns", "delivery"]) or any(
        part in ("services", "forms") for part in parts
    )


def beside_models(module: str) -> bool:
    """From campaigns, the models import only the models and the choices (what needs more
    is registered in ``campaigns.models.checks`` by the module that owns the rule)."""
    parts = module.split(".")
    return parts[0] == "campaigns" and len(parts) > 1 and parts[1] not in ("models", "choices")


def from_packages(module: str) -> bool:
    return module == "packages" or module.startswith("packages.")


def offences(files: list[Path], forbidden, root: Path = ROOT) -> list[str]:
    return [
        f"{path.relative_to(root)}:{line} imports {module}"
        for path in files
        for line, module in imported_modules(path, root)
        if forbidden(module)
    ]


def test_the_checks_see_imports_inside_functions(tmp_path):
    """The checks would find a lazy import (so the tests below can fail)."""
    sample = tmp_path / "campaigns" / "models" / "sample.py"
    sample.parent.mkdir(parents=True)
    sample.write_text(
        "def clean(self):\n"
        "    from campaigns.delivery.services import content_problems\n"
        "    from ..workflow import activities\n"
        "    from packages.forms import PersonalisationForm\n"
    )
    assert offences([sample], above_models, tmp_path) == [
        "campaigns/models/sample.py:2 imports campaigns.delivery.services.content_problems",
        "campaigns/models/sample.py:2 imports campaigns.delivery.services",
        "campaigns/models/sample.py:3 imports campaigns.workflow.activities",
        "campaigns/models/sample.py:3 imports campaigns.workflow",
        "campaigns/models/sample.py:4 imports packages.forms.PersonalisationForm",
        "campaigns/models/sample.py:4 imports packages.forms",
    ]
    assert len(offences([sample], from_packages, tmp_path)) == 2
    assert len(offences([sample], beside_models, tmp_path)) == 4


@pytest.mark.parametrize(
    "path", sorted((CAMPAIGNS / "models").glob("*.py")), ids=lambda path: path.name
)
def test_models_import_nothing_above_them(path):
    assert offences([path], above_models) == []
    assert offences([path], beside_models) == []


def test_campaigns_does_not_import_packages():
    files = [path for path in CAMPAIGNS.rglob("*.py") if "migrations" not in path.parts]
    assert len(files) > 20
    assert offences(files, from_packages) == []


def test_sending_starts_only_through_the_sending_service():
    """The typology's rules at send and the tracked links run in ``begin_sending``, not in
    the model's transition: no other module of campaigns starts a delivery's sending."""
    starts = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in CAMPAIGNS.rglob("*.py")
        if "migrations" not in path.parts
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and node.value == "start_sending"
    ]
    source = (CAMPAIGNS / "delivery" / "sending.py").read_text()
    begin = next(
        node
        for node in ast.parse(source).body
        if isinstance(node, ast.FunctionDef) and node.name == "begin_sending"
    )
    assert starts == [f"campaigns/delivery/sending.py:{node_line(begin, 'start_sending')}"]


def node_line(function: ast.FunctionDef, value: str) -> int:
    return next(
        node.lineno
        for node in ast.walk(function)
        if isinstance(node, ast.Constant) and node.value == value
    )
