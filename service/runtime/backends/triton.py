"""Triton Inference Server backend: the gateway as a client of a (possibly remote) ``tritonserver``.

* Protocols: gRPC (``tritonclient.grpc.aio``, default) or HTTP (``tritonclient.http.aio``), both
  with binary tensors. Only asyncio clients are used, so the event loop never blocks on the network;
  packing and unpacking of large arrays runs in a worker thread.
* Discovery: the repository index, then each READY model's config; a model is served when its
  config carries the ``hrnet_metadata`` parameter (:class:`service.contract.ModelMetadata`), so
  other models on the same server are ignored.
* Readiness follows Triton's: the server is ready and every discovered model is ready.
* Every call has a deadline (``triton_timeout_s``, else ``request_timeout_s``): 504 past it.
* At most ``triton_max_in_flight`` calls are in flight; one more gets 429 at once.
* Triton down, unreachable, restarting or the model not (yet) ready: 503 with Retry-After.
  The client (and its gRPC channel) is recreated after a connection failure and the call retried
  once, so the gateway recovers by itself when Triton comes back; models are re-discovered
  lazily (the next ``models()``/``ready()`` after a failure).
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import numpy as np

from service.contract import METADATA_PARAMETER, SERVED_MERGE_PARAMETER, ModelMetadata
from service.errors import BackendError, ModelNotFound, Overloaded, Timeout, Unavailable
from service.settings import Settings

log = logging.getLogger("service.runtime.triton")

# gRPC statuses (as tritonclient reports them) of a broken or refused connection: retry afresh.
_CONNECTION_STATUSES = ("StatusCode.UNAVAILABLE", "StatusCode.CANCELLED", "StatusCode.ABORTED")
# Messages of a reachable Triton that cannot run the model now (loading, unloaded, stopping).
_UNAVAILABLE_TEXT = (
    "unknown model", "is not ready", "not found", "unavailable", "shutting down", "stopping",
)
_PROBE_TIMEOUT_S = 5.0
_DTYPES = {"FP32": np.float32, "FP16": np.float16, "INT64": np.int64, "INT32": np.int32,
           "UINT8": np.uint8, "BOOL": np.bool_}


def _split_url(url: str) -> str:
    """tritonclient wants ``host:port`` without a scheme."""
    for scheme in ("grpc://", "http://", "https://"):
        if url.startswith(scheme):
            return url[len(scheme):].rstrip("/")
    return url.rstrip("/")


class TritonBackend:
    """:class:`service.runtime.backends.base.Backend` over a Triton server (gRPC or HTTP)."""

    name = "triton"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = _split_url(settings.triton_url)
        self.protocol: str = settings.triton_protocol
        self.timeout_s = settings.triton_timeout_s or settings.request_timeout_s
        self.max_in_flight = settings.triton_max_in_flight or 4 * settings.max_concurrency
        self.startup_wait_s = settings.triton_startup_wait_s
        self.retry_after = max(1, int(settings.retry_after_s))
        self._handle: _Handle | None = None
        self._models: dict[str, ModelMetadata] = {}
        self._outputs: dict[str, list[str]] = {}
        self._runs: dict[str, list[str]] = {}
        self._served: dict[str, str] = {}  # network -> its ``__segment`` model (served merge)
        self._stale = True  # models must be (re)discovered before being trusted
        self._discovered_at = float("-inf")
        self._in_flight = 0
        self._lock: asyncio.Lock | None = None  # created inside the running loop

    # -- client lifecycle ------------------------------------------------------------------

    def _module(self) -> Any:
        if self.protocol == "http":
            import tritonclient.http.aio as module
        else:
            import tritonclient.grpc.aio as module
        return module

    @asynccontextmanager
    async def _using(self) -> AsyncIterator[_Handle]:
        """The current client (created on first use, inside the running loop), held for one call.

        A client retired by :meth:`_retire` is closed only when its last call has finished:
        closing a gRPC channel cancels every RPC still running on it.
        """
        if self._handle is None:
            module = self._module()
            if self.protocol == "http":
                client = module.InferenceServerClient(self.url, conn_timeout=self.timeout_s)
            else:
                client = module.InferenceServerClient(self.url)
            self._handle = _Handle(client)
        handle = self._handle
        handle.users += 1
        try:
            yield handle
        finally:
            handle.users -= 1
            if handle.retired and handle.users == 0:
                await handle.close()

    def _retire(self, handle: _Handle) -> None:
        """Stop handing out ``handle`` after a connection failure; the next call reconnects."""
        if handle is self._handle:
            self._handle = None
            self._stale = True
        handle.retired = True

    # -- discovery ---------------------------------------------------------------------------

    async def _discover(self, client: Any) -> None:
        """Read the repository index and the metadata of every READY model."""
        if self.protocol == "http":
            index = await asyncio.wait_for(client.get_model_repository_index(), _PROBE_TIMEOUT_S)
        else:
            index = (
                await client.get_model_repository_index(as_json=True, client_timeout=_PROBE_TIMEOUT_S)
            ).get("models", [])
        names = sorted({m["name"] for m in index if m.get("state", "READY") == "READY"})
        models: dict[str, ModelMetadata] = {}
        outputs: dict[str, list[str]] = {}
        runs: dict[str, list[str]] = {}
        served: dict[str, str] = {}
        for name in names:
            if self.protocol == "http":
                config = await asyncio.wait_for(client.get_model_config(name), _PROBE_TIMEOUT_S)
            else:
                config = (
                    await client.get_model_config(name, as_json=True, client_timeout=_PROBE_TIMEOUT_S)
                ).get("config", {})
            params = config.get("parameters", {})
            text = params.get(METADATA_PARAMETER, {}).get("string_value")
            merges_for = params.get(SERVED_MERGE_PARAMETER, {}).get("string_value")
            if merges_for:  # a network's served merge: not a model of its own
                served[merges_for] = name
                outputs[name] = [o["name"] for o in config.get("output", [])]
                continue
            if not text:
                log.info("ignoring Triton model %s: no %s parameter", name, METADATA_PARAMETER)
                continue
            try:
                meta = ModelMetadata.from_json(text)
            except Exception as exc:  # a broken entry must not hide the others
                log.error("ignoring Triton model %s: invalid metadata: %s", name, exc)
                continue
            if meta.name != name:  # tasks address the model by the name Triton serves it under
                meta = meta.model_copy(update={"name": name})
            models[name] = meta.running_at(_precision(config, meta))
            outputs[name] = [o["name"] for o in config.get("output", [])] or [o.name for o in meta.outputs]
            runs[name] = _runtime(config)
        served = {net: m for net, m in served.items() if net in models}
        self._models, self._outputs, self._runs, self._stale = models, outputs, runs, False
        self._served = served
        self._discovered_at = time.monotonic()
        log.info("Triton at %s (%s) serves %d HRNet models: %s%s", self.url, self.protocol,
                 len(models), ", ".join(models) or "-",
                 f"; merged on the server: {', '.join(sorted(served))}" if served else "")

    def _needs_discovery(self) -> bool:
        age = time.monotonic() - self._discovered_at
        return self._stale or age > self.settings.triton_rediscover_s

    async def _refresh(self, quiet: bool = False) -> bool:
        """Re-discover when stale or older than ``triton_rediscover_s`` (models added to or removed
        from Triton's repository are followed); False (models kept) when Triton cannot be reached."""
        if not self._needs_discovery():
            return True
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if not self._needs_discovery():
                return True
            async with self._using() as handle:
                try:
                    await self._discover(handle.client)
                    return True
                except Exception as exc:
                    log.log(logging.DEBUG if quiet else logging.WARNING,
                            "Triton discovery at %s failed: %s", self.url, _describe(exc))
                    self._retire(handle)
                    return False

    # -- Backend interface -------------------------------------------------------------------

    async def start(self) -> None:
        """Discover the models, waiting up to ``triton_startup_wait_s`` for Triton to answer.

        Never raises because Triton is down: the gateway starts anyway, reports not-ready and
        answers 503 until Triton is reachable.
        """
        self._stale = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.startup_wait_s
        while True:
            if await self._refresh(quiet=True) and self._models:
                return
            if loop.time() >= deadline:
                log.warning("Triton at %s not ready after %.0f s; starting anyway", self.url,
                            self.startup_wait_s)
                return
            await asyncio.sleep(0.5)
            self._stale = True

    async def close(self) -> None:
        """Close the client (gRPC channel / HTTP session)."""
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.retired = True
            await handle.close()

    async def models(self) -> dict[str, ModelMetadata]:
        """Served models (re-discovered first if a failure made the list stale)."""
        await self._refresh()
        return dict(self._models)

    def providers(self) -> dict[str, list[str]]:
        """What Triton runs each model with: ``triton:<backend or platform>``, its instance kind
        and accelerators (from the model's config)."""
        return {name: list(r) for name, r in self._runs.items()}

    def warnings(self) -> list[str]:
        """Nothing to report: Triton's own configuration decides."""
        return []

    async def ready(self) -> bool:
        """Triton's server readiness and the readiness of every discovered model."""
        if not await self._refresh() or not self._models:
            return False
        async with self._using() as handle:
            return await self._probe(handle)

    async def _probe(self, handle: _Handle) -> bool:
        client = handle.client
        try:
            if self.protocol == "http":
                checks = [client.is_server_ready()] + [client.is_model_ready(n) for n in self._models]
                results = await asyncio.wait_for(asyncio.gather(*checks), _PROBE_TIMEOUT_S)
            else:
                checks = [client.is_server_ready(client_timeout=_PROBE_TIMEOUT_S)] + [
                    client.is_model_ready(n, client_timeout=_PROBE_TIMEOUT_S) for n in self._models
                ]
                results = await asyncio.wait_for(asyncio.gather(*checks), _PROBE_TIMEOUT_S + 1)
        except Exception as exc:
            log.info("Triton readiness probe failed: %s", _describe(exc))
            self._retire(handle)
            return False
        if not all(results):
            self._stale = True  # a reload may have changed the model set
        return all(results)

    def served_merge(self, name: str) -> str | None:
        """The ``__segment`` model that runs segmentation model ``name``'s passes and merge on
        the server (:data:`service.runtime.backends.base.SERVED_MERGE_CAPABILITY`), if READY."""
        return self._served.get(name)

    async def infer(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch on Triton; every output of the model comes back by name."""
        known = lambda: model in self._models or model in self._served.values()  # noqa: E731
        if not known():
            await self._refresh()
            if not known():
                if self._stale:
                    raise Unavailable(
                        f"Triton at {self.url} is unreachable", retry_after=self.retry_after
                    )
                raise ModelNotFound(f"model '{model}' is not served by Triton")
        if self._in_flight >= self.max_in_flight:
            raise Overloaded(
                f"{self._in_flight} Triton calls in flight (limit {self.max_in_flight})",
                retry_after=self.retry_after,
            )
        self._in_flight += 1
        try:
            # A broken connection (e.g. Triton restarted): one retry on a fresh client.
            for attempt in range(2):
                async with self._using() as handle:
                    try:
                        return await self._infer_once(handle.client, model, inputs)
                    except _Retryable as exc:
                        self._retire(handle)
                        if attempt == 1:
                            raise Unavailable(
                                f"Triton at {self.url} is unavailable: {exc.message}",
                                retry_after=self.retry_after,
                            ) from None
            raise AssertionError("unreachable")
        finally:
            self._in_flight -= 1

    # -- one call ------------------------------------------------------------------------------

    async def _infer_once(
        self, client: Any, model: str, inputs: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        module = self._module()
        output_names = self._outputs.get(model) or [o.name for o in self._models[model].outputs]
        binary = self.protocol == "http"
        # Serialising a large array costs milliseconds: keep it off the event loop.
        infer_inputs = await asyncio.to_thread(_pack_inputs, module, inputs, binary)
        if binary:
            outputs = [module.InferRequestedOutput(n, binary_data=True) for n in output_names]
        else:
            outputs = [module.InferRequestedOutput(n) for n in output_names]
        try:
            if self.protocol == "http":
                result = await asyncio.wait_for(
                    client.infer(model, infer_inputs, outputs=outputs), self.timeout_s
                )
            else:
                result = await asyncio.wait_for(
                    client.infer(model, infer_inputs, outputs=outputs, client_timeout=self.timeout_s),
                    self.timeout_s + 1.0,
                )
        except asyncio.TimeoutError:
            raise Timeout(
                f"Triton did not answer '{model}' within {self.timeout_s:g} s"
            ) from None
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # our own request is being cancelled
            # The RPC itself was cancelled (its channel closed under it): a connection failure.
            raise _Retryable("the call was cancelled by its channel") from None
        except Exception as exc:
            raise self._classify(exc, model) from exc
        return await asyncio.to_thread(_unpack_outputs, result, output_names)

    def _classify(self, exc: Exception, model: str) -> Exception:
        """Map a client exception to a retryable connection failure or a BackendError."""
        status, text = _status(exc), _describe(exc)
        lowered = text.lower()
        if "DEADLINE_EXCEEDED" in status:
            return Timeout(f"Triton did not answer '{model}' within {self.timeout_s:g} s")
        transport = isinstance(exc, (OSError, EOFError)) or type(exc).__module__.startswith("aiohttp")
        # grpc's UsageError "Channel is closed": a concurrent call replaced this client meanwhile.
        closed = type(exc).__name__ == "UsageError" or "channel is closed" in lowered
        if transport or closed or any(s in status for s in _CONNECTION_STATUSES):
            return _Retryable(text)
        if any(s in lowered for s in _UNAVAILABLE_TEXT):
            # e.g. the model is still loading after a Triton restart, or was unloaded.
            self._stale = True
            return Unavailable(
                f"model '{model}' is not available on Triton: {text}", retry_after=self.retry_after
            )
        return BackendError(f"Triton inference failed for '{model}': {text}")


def _runtime(config: dict[str, Any]) -> list[str]:
    """``["triton:onnxruntime", "KIND_CPU", ...accelerators]`` of a model config (JSON form)."""
    out = [f"triton:{config.get('backend') or config.get('platform') or 'unknown'}"]
    kinds = sorted({str(g.get("kind", "KIND_AUTO")) for g in config.get("instance_group", [])})
    out += kinds
    accel = config.get("optimization", {}).get("execution_accelerators", {})
    out += [str(a.get("name")) for a in accel.get("gpu_execution_accelerator", [])]
    return out


def _precision(config: dict[str, Any], meta: ModelMetadata) -> str:
    """The precision Triton runs the model at: the metadata's, except an FP32 ONNX entry whose
    config turns on the TensorRT accelerator in FP16 (``--tensorrt-accelerator fp16``)."""
    if meta.precision.precision != "fp32":
        return meta.precision.precision
    accel = config.get("optimization", {}).get("execution_accelerators", {})
    for a in accel.get("gpu_execution_accelerator", []):
        mode = str((a.get("parameters") or {}).get("precision_mode", "")).upper()
        if a.get("name") == "tensorrt" and mode == "FP16":
            return "fp16"
    return "fp32"


class _Retryable(Exception):
    """A connection-level failure: retire the client and retry once on a fresh one."""

    def __init__(self, message: str, *_: Any) -> None:
        super().__init__(message)
        self.message = message


class _Handle:
    """A tritonclient client and the number of calls using it."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.users = 0
        self.retired = False
        self._closed = False

    async def close(self) -> None:
        """Close the client once (closing a broken connection may fail; it is gone either way)."""
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.wait_for(self.client.close(), 5.0)
        except Exception:
            pass


def _status(exc: BaseException) -> str:
    """tritonclient's status text (``StatusCode.UNAVAILABLE``, ``400``...), or ''."""
    status = getattr(exc, "status", None)
    if callable(status):
        try:
            status = status()
        except Exception:
            status = None
    return str(status or "")


def _describe(exc: BaseException) -> str:
    """A one-line description of a client exception."""
    message = getattr(exc, "message", None)
    text = message() if callable(message) else (message or str(exc))
    return f"{type(exc).__name__}: {text}".replace("\n", " ")[:500]


def _pack_inputs(module: Any, inputs: dict[str, np.ndarray], binary: bool) -> list[Any]:
    """tritonclient InferInput objects for ``inputs`` (binary tensor data)."""
    packed = []
    for name, array in inputs.items():
        array = np.ascontiguousarray(array)
        dtype = {np.dtype(v): k for k, v in _DTYPES.items()}.get(array.dtype)
        if dtype is None:
            raise BackendError(f"unsupported input dtype {array.dtype} for '{name}'")
        item = module.InferInput(name, list(array.shape), dtype)
        if binary:
            item.set_data_from_numpy(array, binary_data=True)
        else:
            item.set_data_from_numpy(array)
        packed.append(item)
    return packed


def _unpack_outputs(result: Any, names: list[str]) -> dict[str, np.ndarray]:
    """Writable numpy outputs (tritonclient returns read-only views of the response buffer)."""
    out = {}
    for name in names:
        array = result.as_numpy(name)
        if array is None:
            raise BackendError(f"Triton response lacks output '{name}'")
        out[name] = np.array(array, copy=True)
    return out
