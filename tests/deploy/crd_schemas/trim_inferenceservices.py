"""Writes ``serving.kserve.io_inferenceservices.yaml`` (trimmed) from KServe's published CRD.

    python tests/deploy/crd_schemas/trim_inferenceservices.py SOURCE.yaml > \
        tests/deploy/crd_schemas/serving.kserve.io_inferenceservices.yaml

SOURCE: ``config/crd/full/serving.kserve.io_inferenceservices.yaml`` of KServe v0.20.0 (1.96 MB,
mostly copies of the Pod and Container schemas). The rule, and nothing else:

* every ``description`` is removed (documentation only; validation is unchanged);
* the schemas of the properties in ``TRIMMED`` are replaced by ``{"type": "object",
  "x-kubernetes-preserve-unknown-fields": true}``: the property names stay, so an unknown key
  next to them still fails, but what is inside them is not checked. None of them is used by
  deploy/kubernetes (the tests fail if a manifest uses one: see test_kubernetes.py).

Everything else, in particular ``spec.predictor`` with ``model``, ``autoScaling``,
``minReplicas``/``maxReplicas``, ``resources``, is kept as published.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

# Paths inside the v1beta1 openAPIV3Schema.
TRIMMED = [
    ("status",),
    ("spec", "canary"),
    ("spec", "explainer"),
    ("spec", "transformer"),
    *[("spec", "predictor", name) for name in (
        "workerSpec", "containers", "initContainers", "volumes", "affinity",
        "huggingface", "lightgbm", "onnx", "paddle", "pmml", "pytorch", "sklearn", "tensorflow",
        "triton", "xgboost",
    )],
]
PLACEHOLDER = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def strip_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: strip_descriptions(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [strip_descriptions(v) for v in node]
    return node


def trim(crd: dict[str, Any]) -> dict[str, Any]:
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1beta1"]
    schema = version["schema"]["openAPIV3Schema"]
    for path in TRIMMED:
        node = schema
        for key in path[:-1]:
            node = node["properties"][key]
        assert path[-1] in node["properties"], path
        node["properties"][path[-1]] = dict(PLACEHOLDER)
    return strip_descriptions(crd)


def main() -> None:
    with open(sys.argv[1]) as f:
        crd = yaml.safe_load(f)
    sys.stdout.write(
        "# Trimmed from KServe v0.20.0 config/crd/full/serving.kserve.io_inferenceservices.yaml\n"
        "# by tests/deploy/crd_schemas/trim_inferenceservices.py (see README.md). Do not edit.\n"
    )
    yaml.safe_dump(trim(crd), sys.stdout, sort_keys=False, width=100)


if __name__ == "__main__":
    main()
