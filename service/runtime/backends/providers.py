"""Which ONNX Runtime execution providers the embedded backend runs, decided loudly.

* ``HRNET_ORT_PROVIDERS`` unset: CUDA when this onnxruntime build has it, then CPU (nothing is
  demanded, so nothing fails).
* Set: every provider named must exist in this build (the CPU wheel ``onnxruntime`` has only the
  CPU provider; the ``hrnet-serve[gpu]`` extra installs ``onnxruntime-gpu``). A missing one stops
  start-up with a message that says what is there and what to install, unless
  ``HRNET_ORT_PROVIDER_FALLBACK=true``: then the others run, it is logged, and ``/readyz`` says so.
* A session that silently lost its first provider (ORT falls back to CPU when, say, the CUDA
  libraries cannot be loaded) is treated the same way, per model.

The TensorRT provider gets its engine cache in a fixed directory (restarts reuse the engines),
FP16 on request, and optimisation profiles from the model's serving protocol
(:mod:`service.runtime.profiles`), so requests inside them never rebuild an engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from service.contract import LandmarkMetadata, ModelMetadata, SegmentationMetadata
from service.errors import ConfigurationError
from service.runtime.profiles import compute_profile
from service.settings import Settings

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
DEFAULT = (CUDA, CPU)
#: What a model's ``providers()`` line says when it runs on a GPU: ONNX Runtime's GPU providers,
#: or Triton GPU instances.
GPU_MARKS = (CUDA, TENSORRT, "KIND_GPU")


def runs_on_gpu(providers: Sequence[str]) -> bool:
    """Whether a model whose backend reports ``providers`` (a ``providers()`` line) runs on a
    GPU."""
    return any(p in GPU_MARKS for p in providers)


@dataclass
class ProviderChoice:
    """The providers asked for, the ones that will run, and what could not be had."""

    requested: list[str]
    used: list[str]
    warnings: list[str] = field(default_factory=list)


def choose_providers(settings: Settings, available: Sequence[str]) -> ProviderChoice:
    """The providers of every session (see the module docstring); ConfigurationError when a
    requested one is missing and fallback is not allowed."""
    if not settings.ort_providers:
        used = [p for p in DEFAULT if p in available] or [CPU]
        return ProviderChoice(list(DEFAULT), used)
    requested = list(settings.ort_providers)
    missing = [p for p in requested if p not in available]
    used = [p for p in requested if p in available] or [CPU]
    if not missing:
        return ProviderChoice(requested, used)
    message = (f"ONNX Runtime execution provider(s) {', '.join(missing)} requested "
               f"(HRNET_ORT_PROVIDERS) but this onnxruntime build has only {', '.join(available)}"
               + ("; for CUDA/TensorRT install the GPU extra (pip install 'hrnet-serve[gpu]', "
                  "which brings onnxruntime-gpu instead of onnxruntime)"
                  if {CUDA, TENSORRT} & set(missing) else ""))
    if not settings.ort_provider_fallback:
        raise ConfigurationError(message + "; or set HRNET_ORT_PROVIDER_FALLBACK=true to run on "
                                 f"{', '.join(used)} instead")
    return ProviderChoice(requested, used, [message + f"; running on {', '.join(used)} instead "
                                            "(HRNET_ORT_PROVIDER_FALLBACK)"])


def session_providers(choice: ProviderChoice, meta: ModelMetadata, settings: Settings) -> list[Any]:
    """The ``providers=`` list of ``meta``'s session: names, with the TensorRT provider's options.

    TensorRT is offered to segmentation and landmark graphs (fixed profiles from the protocol);
    detection graphs (data-dependent NMS and RoIAlign shapes) run on the others.
    """
    out: list[Any] = []
    for name in choice.used:
        if name != TENSORRT:
            out.append(name)
        elif isinstance(meta, (SegmentationMetadata, LandmarkMetadata)):
            cache = settings.ort_tensorrt_cache_dir / meta.name
            options = {
                "trt_fp16_enable": "True" if settings.ort_tensorrt_fp16 else "False",
                "trt_engine_cache_enable": "True",
                "trt_engine_cache_path": str(cache),
                "trt_timing_cache_enable": "True",
                "trt_timing_cache_path": str(cache),
                **compute_profile(meta).as_ort_options(),
            }
            out.append((TENSORRT, options))
    return out


def check_session(name: str, choice: ProviderChoice, actual: Sequence[str],
                  settings: Settings) -> list[str]:
    """Warnings for a session that runs without its first provider (a silent ORT fallback);
    ConfigurationError when that provider was explicitly requested and fallback is not allowed."""
    wanted = next((p for p in choice.used if p != CPU), None)
    if wanted is None or wanted in actual:
        return []
    message = (f"model '{name}': ONNX Runtime could not start {wanted} (its libraries may be "
               f"missing) and runs on {', '.join(actual)}")
    if settings.ort_providers and not settings.ort_provider_fallback:
        raise ConfigurationError(message + "; set HRNET_ORT_PROVIDER_FALLBACK=true to accept that")
    return [message]
