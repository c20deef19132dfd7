"""Gateway configuration: one object, read from ``HRNET_*`` environment variables (or a ``.env``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """All gateway settings. Every field maps to ``HRNET_<FIELD>`` (e.g. ``HRNET_MAX_BATCH=8``)."""

    model_config = SettingsConfigDict(env_prefix="HRNET_", env_file=".env", extra="ignore")

    # Models and backend.
    repository: Path = Field(Path("triton_repo"), description="Model repository (Triton layout).")
    backend: Literal["embedded", "triton"] = Field(
        "embedded", description="'embedded': ONNX Runtime in-process; 'triton': a Triton server."
    )
    triton_url: str = Field("localhost:8001", description="Triton address (host:port).")
    triton_protocol: Literal["grpc", "http"] = "grpc"
    triton_timeout_s: float | None = Field(
        None, gt=0, description="Deadline of one Triton call (default: request_timeout_s)."
    )
    triton_max_in_flight: int | None = Field(
        None, ge=1, description="Most Triton calls in flight (default: 4 x max_concurrency); 429 above."
    )
    triton_rediscover_s: float = Field(
        30.0, gt=0, description="How often the model list is re-read from Triton (new exports)."
    )
    triton_startup_wait_s: float = Field(
        10.0, ge=0, description="How long start-up waits for Triton before serving 503s."
    )

    # Request limits.
    max_body_bytes: int = Field(20 * 1024 * 1024, description="Largest request body (413 above); "
                                "multipart uploads up to it are parsed in memory.")
    max_pixels: int = Field(40_000_000, description="Largest decoded image, width*height (413).")
    max_image_side: int = Field(8192, description="Largest decoded image side (413).")
    max_faces: int = Field(32, description="Most faces in one request: face boxes given to "
                           "/landmarks, or faces detected (/faces, /landmarks without boxes).")
    lenient_images: bool = Field(
        False, description="Decode JPEGs with recoverable faults (data ending early, corrupt "
        "segments) instead of refusing them with 400; the answer then carries X-Image-Warning.")
    max_network_pixels: int = Field(
        64_000_000, ge=1, description="Most network-input pixels (summed over all passes) one "
        "request may plan (422); bounds the memory of large scale/flip/max_size combinations.",
    )
    max_detection_pixels: int = Field(
        8_000_000, ge=1, description="Most network-input pixels of one detection request (422): "
        "a detection pixel costs far more than a segmentation one; the official single pass is "
        "~1.07 M (800x1344), two scales + flip ~5.5 M.",
    )
    release_memory_pixels: int = Field(
        2_000_000, ge=0, description="After a request of at least this many network pixels "
        "(or image pixels), freed memory is handed back to the system (malloc_trim); 0: never.",
    )
    release_memory_idle_s: float = Field(
        2.0, ge=0, description="That memory goes back once no request has run for this long "
        "after the large one (0: right after it). Handing it back makes the next large request "
        "fault it in again (a 30-pass merge 5.8 s instead of 1.8 s on a VM), so requests that "
        "follow each other within this time keep a warm heap; an idle gateway returns to its "
        "resting memory this long after its last request.",
    )
    malloc_keep_mb: int = Field(
        1024, ge=0, description="glibc: one heap for all threads that keeps up to this much "
        "freed memory (MiB) for the next run instead of handing it back at once (after a large "
        "request it still goes back, see release_memory_*); 0: glibc's per-thread heaps. "
        "Measured: a 2048x1024 single pass 78800 -> 15 page faults per request, 0.88x the "
        "time; 6 scales + flip 0.86x the time at a peak of 1419 instead of 925 MiB.",
    )
    numpy_hugepages: bool = Field(
        False, description="Let numpy advise transparent huge pages for its large arrays (numpy's "
        "default). Off: where the kernel compacts memory on such a first touch (THP defrag "
        "'madvise'), a 2048x1024 6-scale merge after memory went back took 3.3 s instead of "
        "1.7-2.0 s.",
    )
    max_passes: int = Field(
        256, ge=1, description="Most network passes (scales x windows x flips) one request may plan."
    )
    # Several images per request: each image is held to the limits above; these bound the whole.
    max_images: int = Field(
        16, ge=1, description="Most images in one request (several `file` parts or JSON "
        "`images`); more answer 422 too_many_images.")
    max_request_pixels: int = Field(
        80_000_000, ge=1, description="Most decoded pixels (width*height summed over the "
        "request's images), checked from the headers before any image is decoded (413).")
    max_request_network_pixels: int = Field(
        128_000_000, ge=1, description="Most network-input pixels summed over all images of a "
        "request (422): the outputs of all passes are held until each image's merge.")
    max_request_detection_pixels: int = Field(
        32_000_000, ge=1, description="Most detection network-input pixels summed over all "
        "images of a request (422).")

    # Scheduling.
    max_batch: int = Field(8, ge=1, description="Most network passes in one backend call.")
    max_batch_pixels: int = Field(
        2_097_152, ge=1, description="Most network-input pixels in one backend call (a larger "
        "pass runs alone): big passes gain nothing from batching and multiply the memory.")
    max_concurrency: int = Field(2, ge=1, description="Requests running inference at once.")
    max_queue: int = Field(16, ge=0, description="Requests waiting for a slot before 429.")
    request_timeout_s: float = Field(
        120.0, gt=0, description="Deadline of a request's work after decoding: planning, queue, "
        "inference, merge and encoding (504; work not yet started is dropped).")
    retry_after_s: int = Field(1, ge=0, description="Retry-After seconds sent with 429/503.")

    # ONNX Runtime (embedded backend). 0 lets ORT choose.
    ort_intra_threads: int = Field(0, ge=0)
    ort_inter_threads: int = Field(0, ge=0)
    ort_allow_spinning: bool = Field(
        False, description="Let ORT worker threads spin after a run (faster back-to-back runs on "
        "dedicated cores; slower pre/post-processing when cores are shared)."
    )
    ort_cpu_arena: bool = Field(
        False, description="ONNX Runtime's CPU memory arena. Off (every tensor from malloc) the "
        "memory of a large request returns to the system afterwards; on, the arena keeps its "
        "high-water mark (measured 0.47 vs 0.17 GB after a 2048x1024 6-scale request, with the "
        "shrinkage below) and a 1024x2048 pass runs ~3% faster.")
    ort_shrink_arena: bool = Field(
        True, description="Hand the arena's unused chunks back after each run, so memory returns "
        "to its resting level after a large request.")
    ort_providers: list[str] | None = Field(
        None, description="Execution providers in order (JSON list), each required to exist; "
        "default: CUDA when this onnxruntime build has it, then CPU."
    )
    ort_provider_fallback: bool = Field(
        False, description="Start anyway when a requested provider is missing (logged, shown in "
        "/readyz) instead of refusing to start.")
    ort_tensorrt_fp16: bool = Field(False, description="TensorRT provider: build FP16 engines.")
    ort_tensorrt_cache_dir: Path = Field(
        Path("/tmp/hrnet-tensorrt-cache"), description="TensorRT provider: engine and timing "
        "caches (per model), so restarts reuse built engines; mount a volume here to keep them.")
    merge_on_device: Literal["auto", "on", "off"] = Field(
        "auto", description="Segmentation: run the official merge in the backend's merge graph "
        "(the entry's 1/merge.onnx) where the network runs, so only the uint8 label map comes "
        "back. Embedded: 'auto' where the model runs on a GPU provider (CUDA, TensorRT), 'on' "
        "always (ONNX Runtime CPU too). Triton, where the server has the model's served merge "
        "(<model>__segment: passes in, label map out, no logits over the network): 'auto' on "
        "GPU instances, 'on' always (CPU instances too: slower there, but no logits cross a "
        "slow link). 'off' never: the gateway's numpy merge.")
    executor_threads: int = Field(0, ge=0, description="Thread pool for ORT calls; 0 = max_concurrency.")
    cpu_threads: int = Field(
        0, ge=0, description="Threads of the gateway's parallel CPU work (merge row blocks); 0 = "
        "one per CPU.")
    early_merge: Literal["auto", "on", "off"] = Field(
        "auto", description="Segmentation with several scales: sum the scales already inferred "
        "on a low-priority thread while the later ones run (same labels), so that only the last "
        "scale and the argmax follow the last pass. 'auto': where cores stay free during "
        "inference (Triton, a GPU provider, or ORT held to fewer intra-op threads than the "
        "gateway has CPUs); beside ORT on every core it slowed inference as much as it saved. "
        "'on' always, 'off' never.")
    background_nice: int = Field(
        10, ge=0, le=19, description="Nice value of that thread (Linux, per thread): high enough "
        "that inference keeps its cores, low enough that the thread is not starved.")

    # Default model per task (None: the first model of that task, by name).
    default_segmentation_model: str | None = None
    default_landmarks_model: str | None = None
    default_detection_model: str | None = None
    default_face_detection_model: str | None = None

    # Authentication (service/http/auth.py).
    api_keys: list[str] = Field(
        default_factory=list, repr=False, description="API keys (a JSON list; several for "
        "rotation). Empty: no authentication. Set: every path but the probes, the docs and the "
        "demo page needs 'Authorization: Bearer <key>' or 'X-API-Key: <key>' (401).")
    metrics_public: bool = Field(
        False, description="Serve /metrics without an API key when keys are set.")

    # HTTP server (service/http/server.py): slow clients, header limits, open connections.
    http_header_timeout_s: float = Field(
        10.0, gt=0, description="The request line and headers must arrive within this time "
        "(408 and close); also how long a new connection may stay silent.")
    http_body_timeout_s: float = Field(
        20.0, gt=0, description="The request body must arrive within this time after the "
        "headers, plus 1 s per http_body_min_rate bytes received (408 and close).")
    http_body_min_rate: int = Field(
        4096, ge=0, description="Bytes per second a body must average beyond the body timeout "
        "(0: the body timeout is the whole allowance).")
    http_max_header_bytes: int = Field(
        32 * 1024, ge=1024, description="Largest request line + headers (431).")
    http_max_headers: int = Field(100, ge=1, description="Most header fields in a request (431).")
    http_max_connections: int = Field(
        1000, ge=1, description="Most open client connections; one more is answered 503 and closed.")
    http_keepalive_timeout_s: float = Field(
        5.0, gt=0, description="An idle kept-alive connection is closed after this time.")

    # HTTP.
    cors_origins: list[str] = Field(default_factory=list, description="Allowed CORS origins.")
    host: str = "0.0.0.0"
    port: int = 8000
    log_level: str = "info"
    access_log: bool = Field(True, description="uvicorn's access log line per request.")

    @field_validator("api_keys")
    @classmethod
    def _keys_not_blank(cls, keys: list[str]) -> list[str]:
        if any(not k.strip() or k != k.strip() for k in keys):
            raise ValueError("API keys must be non-empty, without surrounding whitespace")
        return keys

    def default_model(self, task: str) -> str | None:
        """The configured default model name for ``task`` (None when not configured)."""
        return getattr(self, f"default_{task}_model", None)
