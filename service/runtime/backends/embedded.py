"""In-process backend: one session per repository entry, of the kind its metadata names.

Discovers ``<repository>/<name>/hrnet.json`` + ``<name>/1/model.onnx`` (entries with only a TensorRT
plan are skipped). The entry's ``precision.engine`` picks the session: ONNX Runtime (FP32 and
INT8 Q/DQ graphs) or OpenVINO (:mod:`service.runtime.backends.openvino`: BF16, or INT8 where the
export measured it faster). Both release the GIL while they run, so calls go to a thread pool and
the event loop stays free. ONNX Runtime's execution providers are chosen by
:mod:`service.runtime.backends.providers` (a missing requested provider stops start-up);
:meth:`EmbeddedBackend.providers` reports what runs each model. A segmentation entry's merge graph
(``1/merge.onnx``) gets its own session on the model's providers, run as model
``<name>/merge`` (:meth:`EmbeddedBackend.merge_models`).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from service.contract import (
    METADATA_FILENAME, ModelMetadata, SegmentationMetadata, merge_model_name,
)
from service.errors import BackendError, ConfigurationError, ModelNotFound, ServiceError, Unavailable
from service.runtime.backends.providers import (
    CPU, TENSORRT, check_session, choose_providers, session_providers,
)
from service.settings import Settings

log = logging.getLogger("service.runtime.embedded")


def discover(repository: Path) -> dict[str, tuple[ModelMetadata, Path]]:
    """Entries of ``repository`` that have metadata and an ONNX graph: name -> (metadata, onnx path)."""
    found: dict[str, tuple[ModelMetadata, Path]] = {}
    if not repository.is_dir():
        return found
    for meta_file in sorted(repository.glob(f"*/{METADATA_FILENAME}")):
        entry = meta_file.parent
        onnx_file = entry / "1" / "model.onnx"
        if not onnx_file.is_file():
            continue
        try:
            meta = ModelMetadata.from_json(meta_file.read_text())
        except Exception as exc:  # a broken entry must not take the others down
            log.error("skipping %s: invalid metadata: %s", entry.name, exc)
            continue
        found[meta.name] = (meta, onnx_file)
    return found


def session_options(settings: Settings):  # -> onnxruntime.SessionOptions (imported lazily)
    """The ONNX Runtime session options of every embedded model (benchmarks reuse them)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = settings.ort_intra_threads
    opts.inter_op_num_threads = settings.ort_inter_threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not settings.ort_allow_spinning:
        # Spinning ORT workers keep the cores busy after a run, slowing the merge that
        # follows it on small machines (measured: 102 ms -> 67 ms on 2 cores).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.enable_cpu_mem_arena = settings.ort_cpu_arena
    return opts


def run_options(settings: Settings):  # -> onnxruntime.RunOptions
    """Options of every ``session.run``: with the arena kept, its chunks that a large request
    needed are handed back after each run (``ort_shrink_arena``), so the gateway's memory returns
    to its resting level instead of keeping the largest request's high-water mark."""
    import onnxruntime as ort

    opts = ort.RunOptions()
    if settings.ort_cpu_arena and settings.ort_shrink_arena:
        opts.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return opts


def served_precision(meta: ModelMetadata, providers: list[str], settings: Settings) -> str:
    """The precision an entry really runs at here: its own, except an FP32 graph that ONNX
    Runtime's TensorRT provider builds FP16 engines of (``ort_tensorrt_fp16``)."""
    if (meta.precision.precision == "fp32" and settings.ort_tensorrt_fp16
            and TENSORRT in providers):
        return "fp16"
    return meta.precision.precision


class OrtSession:
    """An ONNX Runtime session as the backend uses it: :meth:`begin` gives a run's options (its
    cancellable handle), :meth:`run` runs, :meth:`cancel` stops a run."""

    engine = "onnxruntime"

    def __init__(self, session: Any, settings: Settings) -> None:
        self.session = session
        self.settings = settings
        self.output_names = [o.name for o in session.get_outputs()]

    def providers(self) -> list[str]:
        """The execution providers the session runs on, in order."""
        return list(self.session.get_providers())

    def begin(self) -> Any:
        """The run's ``RunOptions``."""
        return run_options(self.settings)

    def run(self, inputs: dict[str, np.ndarray], handle: Any = None) -> dict[str, np.ndarray]:
        """Every output by name."""
        options = handle if handle is not None else self.begin()
        return dict(zip(self.output_names, self.session.run(self.output_names, inputs, options)))

    @staticmethod
    def cancel(handle: Any) -> None:
        """Terminate the run of ``handle``."""
        handle.terminate = True


class EmbeddedBackend:
    """Sessions in this process: ONNX Runtime (CUDA first when available, else as configured),
    or OpenVINO on the CPU for entries that name it."""

    name = "embedded"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._sessions: dict[str, Any] = {}
        self._models: dict[str, ModelMetadata] = {}
        threads = settings.executor_threads or settings.max_concurrency
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="ort")
        self._started = False
        self._used: dict[str, list[str]] = {}
        self._warnings: list[str] = []

    def _session(self, meta: ModelMetadata, path: Path, ort: Any, choice: Any) -> Any:
        """The session of one entry, by its ``precision.engine``."""
        engine = meta.precision.engine
        if engine == "openvino":
            from service.runtime.backends.openvino import OpenVINOSession

            return OpenVINOSession(path, meta.precision.precision,
                                   threads=self.settings.ort_intra_threads)
        if engine != "onnxruntime":
            raise ValueError(f"engine {engine!r} does not run in the embedded backend")
        # INT8 Q/DQ graphs are CPU graphs (GPU providers run Q/DQ as float, slowly).
        providers = (session_providers(choice, meta, self.settings)
                     if meta.precision.precision == "fp32" else [CPU])
        session = ort.InferenceSession(str(path), sess_options=session_options(self.settings),
                                       providers=providers)
        return OrtSession(session, self.settings)

    def _merge_session(self, meta: ModelMetadata, path: Path, ort: Any, actual: list[str]
                       ) -> OrtSession | None:
        """The segmentation entry's merge graph on the model's own providers (without
        TensorRT, which would build engines per request shape; CPU for OpenVINO entries), or
        None when the entry has none or it is off (``merge_on_device``)."""
        if (not isinstance(meta, SegmentationMetadata) or not meta.segmentation.merge_graph
                or self.settings.merge_on_device == "off"):
            return None
        graph = path.parent / meta.segmentation.merge_graph
        if not graph.is_file():
            return None
        providers = [p for p in actual if p != TENSORRT and p in ort.get_available_providers()]
        try:
            session = ort.InferenceSession(str(graph), sess_options=session_options(self.settings),
                                           providers=providers or [CPU])
        except Exception as exc:  # the gateway's merge still serves the model
            log.error("cannot load the merge graph %s: %s", graph, exc)
            return None
        return OrtSession(session, self.settings)

    def merge_models(self) -> set[str]:
        """Models whose merge graph is loaded (:mod:`service.tasks.segmentation.merge_graph`)."""
        return {name for name in self._models if merge_model_name(name) in self._sessions}

    def _load(self) -> tuple[dict[str, Any], dict[str, ModelMetadata], dict[str, list[str]]]:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ConfigurationError(
                "the embedded backend needs ONNX Runtime: install 'hrnet-serve[cpu]' (or "
                "'hrnet-serve[gpu]' for CUDA), or serve through Triton (HRNET_BACKEND=triton)"
            ) from exc
        choice = choose_providers(self.settings, ort.get_available_providers())
        self._warnings = list(choice.warnings)
        for warning in choice.warnings:
            log.warning(warning)
        sessions: dict[str, Any] = {}
        models: dict[str, ModelMetadata] = {}
        used: dict[str, list[str]] = {}
        for name, (meta, path) in discover(Path(self.settings.repository)).items():
            try:
                session = self._session(meta, path, ort, choice)
            except Exception as exc:  # e.g. an OpenVINO entry where openvino is not installed
                log.error("cannot load %s (%s on %s): %s", path, meta.precision.precision,
                          meta.precision.engine, exc)
                continue
            actual = session.providers()
            if isinstance(session, OrtSession) and meta.precision.precision == "fp32":
                for warning in check_session(name, choice, actual, self.settings):
                    log.warning(warning)
                    self._warnings.append(warning)
            sessions[name], used[name] = session, actual
            models[name] = meta.running_at(served_precision(meta, actual, self.settings))
            merge = self._merge_session(meta, path, ort, actual)
            if merge is not None:
                sessions[merge_model_name(name)] = merge
            log.info("loaded %s (%s, %s) with %s", name, meta.task, meta.precision.precision,
                     ", ".join(actual))
        return sessions, models, used

    async def start(self) -> None:
        """Load (or reload) every model of the repository."""
        loop = asyncio.get_running_loop()
        sessions, models, used = await loop.run_in_executor(self._pool, self._load)
        self._sessions, self._models, self._used = sessions, models, used
        self._started = True

    async def close(self) -> None:
        """Drop sessions and stop the thread pool."""
        self._sessions, self._models = {}, {}
        self._started = False
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def models(self) -> dict[str, ModelMetadata]:
        """Loaded models by name."""
        return dict(self._models)

    async def ready(self) -> bool:
        """True once started with at least one model."""
        return self._started and bool(self._sessions)

    def providers(self) -> dict[str, list[str]]:
        """The execution providers each loaded model's session runs on, in order."""
        return {name: list(p) for name, p in self._used.items()}

    def warnings(self) -> list[str]:
        """What start-up could not do as configured (e.g. a provider fallback)."""
        return list(self._warnings)

    async def infer(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch of ``model`` in the thread pool; returns all outputs by name."""
        session = self._sessions.get(model)
        if session is None:
            if not self._started:
                raise Unavailable("backend not started", retry_after=1)
            raise ModelNotFound(f"model '{model}' is not served")
        loop = asyncio.get_running_loop()
        handle = session.begin()
        try:
            return await loop.run_in_executor(self._pool, session.run, inputs, handle)
        except asyncio.CancelledError:
            # The request left (deadline, client gone): stop the run instead of finishing it.
            session.cancel(handle)
            raise
        except RuntimeError as exc:
            if "shutdown" in str(exc):
                raise Unavailable("backend is shutting down", retry_after=1) from exc
            raise BackendError(f"inference failed for '{model}': {exc}") from exc
        except ServiceError:
            raise
        except Exception as exc:  # ORT raises its own exception types
            raise BackendError(f"inference failed for '{model}': {exc}") from exc

