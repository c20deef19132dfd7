"""What the gateway says about itself when it starts, and what ``/readyz`` tells an operator
when it serves no model: the repository (absolute path), the backend and its execution
providers, the models with their weights origin, and the limits in force."""

from __future__ import annotations

from pathlib import Path

from service.contract import ModelMetadata
from service.settings import Settings


def repository_path(settings: Settings) -> Path:
    """The repository as an absolute path (the setting may be relative to the working dir)."""
    return Path(settings.repository).expanduser().resolve()


def no_models_hint(settings: Settings, backend: str) -> str:
    """Why no model is served and what to do about it (for the log and ``/readyz``)."""
    if backend == "triton":
        return (f"Triton at {settings.triton_url} ({settings.triton_protocol}) lists no model with "
                "hrnet_metadata: export into Triton's model repository (python -m model_export "
                "export ... --repo <its repository>) and wait for its repository poll, or check "
                "HRNET_TRITON_URL")
    repo = repository_path(settings)
    where = (f"the repository {repo} does not exist" if not repo.exists() else
             f"the repository {repo} is not a directory" if not repo.is_dir() else
             f"the repository {repo} holds no model (no <name>/hrnet.json with <name>/1/model.onnx)")
    return (f"{where}: set HRNET_REPOSITORY (or --repository) to a model repository, or write "
            f"the demo models there with `python -m model_export demo --repo {repo}` (or "
            "`bash scripts/serve.sh`), then restart the gateway")


def startup_lines(settings: Settings, backend: str, models: dict[str, ModelMetadata],
                  providers: dict[str, list[str]]) -> list[str]:
    """The INFO lines of a start: where the models come from, which, what runs each (the
    backend's own report: ONNX Runtime's execution providers, or Triton's), and the limits."""
    lines = []
    if backend == "triton":
        lines.append(f"backend triton at {settings.triton_url} ({settings.triton_protocol})")
    else:
        lines.append(f"backend embedded, repository {repository_path(settings)}")
    for name, meta in models.items():
        weights = "RANDOM WEIGHTS" if meta.weights.random_init else meta.weights.origin
        runs = ", ".join(providers.get(name, [])) or "?"
        lines.append(f"model {name}: {meta.task}, {meta.arch}, {meta.dataset}, {weights}; "
                     f"runs on {runs}")
    lines.append(
        f"limits: body {settings.max_body_bytes} B, image {settings.max_pixels} px (side "
        f"{settings.max_image_side}), {settings.max_faces} faces, {settings.max_passes} passes / "
        f"{settings.max_network_pixels} network px per image; {settings.max_images} images / "
        f"{settings.max_request_pixels} px / {settings.max_request_network_pixels} network px "
        f"per request; {settings.max_concurrency} "
        f"running + {settings.max_queue} queued, batch {settings.max_batch}, deadline "
        f"{settings.request_timeout_s:g} s")
    return lines


def random_init_warning(models: dict[str, ModelMetadata]) -> str | None:
    """A warning naming the models with random weights (None when there is none)."""
    names = [n for n, m in models.items() if m.weights.random_init]
    if not names:
        return None
    return (f"{', '.join(names)}: RANDOM-INIT weights (demo/test exports); their answers are "
            "meaningless and say random_init=true")
