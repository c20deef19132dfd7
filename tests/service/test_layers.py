"""The gateway's layers, read from the source: nothing below ``service/http`` imports the web
framework or Prometheus, lower layers never import higher ones, and every task has the same steps."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVICE = Path(__file__).resolve().parents[2] / "service"
WEB = ("fastapi", "starlette", "prometheus_client", "uvicorn")
# Layer of each part of service/ (higher numbers may import lower ones only).
LAYERS = {"contract": 0, "errors": 0, "timings": 0, "settings": 0, "imaging": 1, "runtime": 1,
          "tasks": 2, "http": 3, "app": 4, "__main__": 5}


def _modules() -> dict[str, Path]:
    return {".".join(p.relative_to(SERVICE.parent).with_suffix("").parts): p
            for p in SERVICE.rglob("*.py")}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


@pytest.mark.parametrize("module", sorted(m for m in _modules() if _part(m) not in ("http", "app", "__main__")))
def test_below_http_nothing_imports_the_web_layer(module: str) -> None:
    bad = sorted(i for i in _imports(_modules()[module]) if i.split(".")[0] in WEB)
    assert not bad, f"{module} imports {bad}"


def test_imports_only_go_down_the_layers() -> None:
    wrong = []
    for module, path in _modules().items():
        if _part(module) not in LAYERS:
            continue
        for target in _imports(path):
            if target.startswith("service.") and _part(target) in LAYERS:
                if LAYERS[_part(target)] > LAYERS[_part(module)]:
                    wrong.append(f"{module} -> {target}")
    assert not wrong, wrong


def test_every_task_is_a_package_of_the_same_steps() -> None:
    tasks = sorted(p for p in (SERVICE / "tasks").iterdir() if (p / "__init__.py").is_file())
    assert [p.name for p in tasks] == ["detection", "face_detection", "landmarks", "segmentation"]
    steps = {"__init__.py", "schemas.py", "plan.py", "merge.py", "respond.py"}
    for task in tasks:
        assert steps <= {f.name for f in task.glob("*.py")}, task.name
    from service.tasks import detection, face_detection, landmarks, segmentation

    for pkg in (detection, face_detection, landmarks, segmentation):
        t = pkg.TASK
        assert (t.resolve.__name__, t.plan.__name__, t.merge.__name__, t.respond.__name__) == (
            "resolve", "plan", "merge", "respond")
        assert t.resolve.__module__ == t.plan.__module__ == f"{pkg.__name__}.plan"
        assert t.merge.__module__ == f"{pkg.__name__}.merge"
        assert t.respond.__module__ == f"{pkg.__name__}.respond"


def test_list_options_take_form_text_whatever_their_constraints() -> None:
    """Every option whose type is a list (bounded or not, in a union) gets the JSON /
    comma-separated text parser; segmentation's ``scales`` also takes the word ``multi``."""
    from service.http.forms import RequestFields
    from service.tasks import detection, landmarks, segmentation

    seg = RequestFields.of(segmentation.TASK).text
    assert set(seg) == {"scales"}
    assert seg["scales"]("scales", "0.5, 1") == ["0.5", "1"]
    assert seg["scales"]("scales", "[0.5,1]") == [0.5, 1] and seg["scales"]("scales", "multi") == "multi"
    assert set(RequestFields.of(detection.TASK).text) == {"classes", "max_size", "scales"}
    assert RequestFields.of(landmarks.TASK).extras.keys() == {"faces"}
