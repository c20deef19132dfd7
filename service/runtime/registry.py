"""Model lookup by name and task, with a default model per task."""

from __future__ import annotations

from service.contract import TASKS, ModelMetadata
from service.errors import BadRequest, ModelNotFound, shown
from service.settings import Settings


class ModelRegistry:
    """The served models (a snapshot of ``backend.models()``) and the default per task."""

    def __init__(self, models: dict[str, ModelMetadata], settings: Settings) -> None:
        self.models = dict(sorted(models.items()))
        self.defaults: dict[str, str] = {}
        for task in TASKS:
            configured = settings.default_model(task)
            if configured is not None and configured in self.models:
                self.defaults[task] = configured
                continue
            names = [n for n, m in self.models.items() if m.task == task]
            # FP32 first (the official numbers; lower tiers are opt-in), and an entry that runs
            # anywhere before a TensorRT plan.
            names.sort(key=lambda n: (self.models[n].precision.precision != "fp32",
                                      self.models[n].precision.engine == "tensorrt",
                                      n.endswith("_trt"), n))
            if names:
                self.defaults[task] = names[0]

    def served(self, task: str | None = None) -> str:
        """The served model names (of ``task``), for error messages."""
        names = [n for n, m in self.models.items() if task is None or m.task == task]
        return ", ".join(names) if names else "none"

    def tiers(self, name: str) -> list[ModelMetadata]:
        """Every served precision tier of model ``name``'s checkpoint: its FP32 entry (the
        ``precision.base_model`` of a tier, or ``name`` itself) and the entries made from it,
        FP32 first, then by name."""
        meta = self.get(name)
        base = meta.precision.base_model or meta.name
        found = [m for n, m in self.models.items()
                 if n == base or m.precision.base_model == base]
        return sorted(found, key=lambda m: (m.precision.precision != "fp32", m.name))

    def get(self, name: str) -> ModelMetadata:
        """The model ``name``; 404 when not served (the message lists those that are)."""
        meta = self.models.get(name)
        if meta is None:
            raise ModelNotFound(f"model {shown(name)} is not served; served models: {self.served()}")
        return meta

    def resolve(self, name: str | None, task: str) -> ModelMetadata:
        """``name`` (or the task's default when None), checked to be a ``task`` model.

        404 for an unknown model (or no model of the task), 400 for a model of another task.
        """
        if name is None or name == "":
            default = self.defaults.get(task)
            if default is None:
                raise ModelNotFound(f"no {task} model is served; served models: "
                                    f"{self.served()}")
            name = default
        meta = self.get(name)
        if meta.task != task:
            raise BadRequest(
                f"model {shown(name)} is a {meta.task} model, not a {task} model; {task} models: "
                f"{self.served(task)}", code="wrong_task"
            )
        return meta
