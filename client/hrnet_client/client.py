"""``Client`` (sync) and ``AsyncClient``: one method per gateway endpoint.

Both build the same requests (:class:`_Requests`): the image as the multipart ``file`` part, the
options as one JSON ``options`` field (typed values: lists, booleans, numbers), extra fields such
as landmarks' ``faces`` as JSON text; ``label_map`` asks for ``application/octet-stream`` and
reads the raw array (shape and dtype from ``X-Label-Map-Shape`` / ``X-Label-Map-Dtype``).
Answers 429 and 503 (and connection failures) are retried, honouring ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from typing import Any, Callable, Optional, Sequence, TypeVar

import httpx
import numpy as np

from hrnet_client.images import ImageInput, image_file
from hrnet_client.results import Detections, Landmarks, Segmentation

log = logging.getLogger("hrnet_client")
T = TypeVar("T")
RETRY_STATUSES = (429, 503)
RAW = "application/octet-stream"


class GatewayError(Exception):
    """A non-2xx answer: ``status``, the gateway's error ``code`` and ``message``."""

    def __init__(self, status: int, code: str, message: str, response: httpx.Response | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.response = status, code, message, response

    @classmethod
    def of(cls, response: httpx.Response) -> "GatewayError":
        try:
            err = response.json()["error"]
            return cls(response.status_code, err.get("code", "error"), err.get("message", ""),
                       response)
        except Exception:  # not the gateway's JSON error shape (a proxy, say)
            return cls(response.status_code, "http_error", response.text[:500], response)


def _drop_none(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if v is not None}


class _Requests:
    """What both clients share: settings, request building, answer parsing, retry waits."""

    def __init__(self, base_url: str, *, api_key: Optional[str], timeout: float, retries: int,
                 max_retry_wait: float, headers: Optional[dict[str, str]]) -> None:
        self.base_url = base_url.rstrip("/")
        self.retries = max(0, int(retries))
        self.max_retry_wait = float(max_retry_wait)
        self.headers = {"User-Agent": "hrnet-client/0.1", **(headers or {})}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.timeout = httpx.Timeout(timeout)
        self._warned: set[str] = set()

    def task_request(self, path: str, image: ImageInput, options: dict[str, Any],
                     extras: dict[str, Any], accept: str = "application/json") -> dict[str, Any]:
        name, data, media = image_file(image)
        fields = {"options": json.dumps(_drop_none(options))}
        fields.update({k: json.dumps(v) for k, v in extras.items() if v is not None})
        return {"method": "POST", "url": f"{self.base_url}{path}", "data": fields,
                "files": {"file": (name, data, media)}, "headers": {"Accept": accept}}

    def batch_request(self, path: str, images: Sequence[ImageInput], options: dict[str, Any],
                      extras: dict[str, Any]) -> dict[str, Any]:
        """Several images in one request: one ``file`` part each, in order."""
        req = self.task_request(path, images[0], options, extras)
        req["files"] = [("file", image_file(im)) for im in images]
        return req

    def parsed_batch(self, response: httpx.Response, parse: Callable[[dict], T]
                     ) -> list[T | GatewayError]:
        """A several-image answer: each image's result, or the :class:`GatewayError` of an
        image that failed alone."""
        results = self.check(response).json()["results"]
        out: list[T | GatewayError] = []
        for item in results:
            if "error" in item:
                err = item["error"]
                out.append(GatewayError(item["status"], err.get("code", "error"),
                                        err.get("message", ""), response))
            else:
                out.append(self.parsed_body(item, parse))
        return out

    def wait(self, response: Optional[httpx.Response], attempt: int) -> float:
        """Seconds to wait before retry ``attempt`` (1-based): ``Retry-After`` when the answer
        has one, else an exponential back-off with jitter; at most ``max_retry_wait``."""
        if response is not None:
            header = response.headers.get("retry-after", "")
            try:
                return min(self.max_retry_wait, max(0.0, float(header)))
            except ValueError:
                pass
        return min(self.max_retry_wait, 0.25 * 2 ** (attempt - 1) * (1 + random.random() / 2))

    def check(self, response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            raise GatewayError.of(response)
        return response

    def parsed(self, response: httpx.Response, parse: Callable[[dict], T]) -> T:
        return self.parsed_body(self.check(response).json(), parse)

    def parsed_body(self, body: dict, parse: Callable[[dict], T]) -> T:
        result = parse(body)
        model = getattr(result, "model", None)
        if model is not None and model.random_init and model.name not in self._warned:
            self._warned.add(model.name)
            log.warning("model %s has RANDOM weights: its results are meaningless", model.name)
        return result

    @staticmethod
    def label_array(response: httpx.Response) -> np.ndarray:
        shape = tuple(int(v) for v in response.headers["x-label-map-shape"].split(","))
        dtype = np.dtype(response.headers["x-label-map-dtype"])
        return np.frombuffer(response.content, dtype).reshape(shape).copy()  # writable


class Client:
    """Blocking client. ``with Client(url) as c: c.segment("street.jpg")``.

    ``api_key``: sent as ``Authorization: Bearer``; ``timeout``: seconds per HTTP call;
    ``retries``: how often a 429/503 answer or a connection failure is retried;
    ``max_retry_wait``: the longest wait between tries.
    """

    def __init__(self, base_url: str = "http://localhost:8000", *, api_key: Optional[str] = None,
                 timeout: float = 120.0, retries: int = 3, max_retry_wait: float = 30.0,
                 headers: Optional[dict[str, str]] = None,
                 transport: Optional[httpx.BaseTransport] = None) -> None:
        self._r = _Requests(base_url, api_key=api_key, timeout=timeout, retries=retries,
                            max_retry_wait=max_retry_wait, headers=headers)
        self._http = httpx.Client(headers=self._r.headers, timeout=self._r.timeout,
                                  transport=transport)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        for attempt in range(self._r.retries + 1):
            try:
                response = self._http.request(method, url, **kwargs)
            except (httpx.ConnectError, httpx.RemoteProtocolError):
                if attempt == self._r.retries:
                    raise
                time.sleep(self._r.wait(None, attempt + 1))
                continue
            if response.status_code not in RETRY_STATUSES or attempt == self._r.retries:
                return response
            time.sleep(self._r.wait(response, attempt + 1))
        raise AssertionError("unreachable")

    def _get(self, path: str) -> Any:
        return self._r.check(self._send("GET", f"{self._r.base_url}{path}")).json()

    # -- operations ---------------------------------------------------------------------------
    def health(self) -> dict:
        """``GET /healthz``."""
        return self._get("/healthz")

    def ready(self) -> bool:
        """``GET /readyz``: True when the gateway serves (503 answers False, after retries)."""
        r = self._send("GET", f"{self._r.base_url}/readyz")
        return r.status_code == 200

    def models(self) -> list[dict]:
        """``GET /v1/models``: every served model's description."""
        return self._get("/v1/models")["models"]

    def model(self, name: str) -> dict:
        """``GET /v1/models/{name}``."""
        return self._get(f"/v1/models/{name}")

    # -- tasks --------------------------------------------------------------------------------
    def segment(self, image: ImageInput, *, model: Optional[str] = None, **options: Any
                ) -> Segmentation:
        """``POST /segment`` (options: ``scales``, ``flip``, ``window``, ``rle``, ``polygons``,
        ``confidence``, ``overlay``, ``label_ids`` ...)."""
        req = self._r.task_request("/segment", image, {"model": model, **options}, {})
        return self._r.parsed(self._send(**req), Segmentation.of)

    def label_map(self, image: ImageInput, *, model: Optional[str] = None, **options: Any
                  ) -> np.ndarray:
        """``POST /segment`` answered as the raw label map: ``H x W`` uint8 (uint16 past 256
        classes) class indices, no PNG and no JSON in between."""
        req = self._r.task_request("/segment", image, {"model": model, **options}, {}, RAW)
        return self._r.label_array(self._r.check(self._send(**req)))

    def landmarks(self, image: ImageInput, *, faces: Optional[list] = None,
                  model: Optional[str] = None, **options: Any) -> Landmarks:
        """``POST /landmarks``; ``faces``: boxes ``[x1, y1, x2, y2]`` or ``{"center", "scale"}``
        (none: the whole image is one face)."""
        req = self._r.task_request("/landmarks", image, {"model": model, **options},
                                   {"faces": faces})
        return self._r.parsed(self._send(**req), Landmarks.of)

    def detect(self, image: ImageInput, *, model: Optional[str] = None, **options: Any
               ) -> Detections:
        """``POST /detect`` (options: ``score_threshold``, ``max_detections``, ``classes``,
        ``scales``, ``flip``, ``merge``, ``coco_results``, ``overlay`` ...)."""
        req = self._r.task_request("/detect", image, {"model": model, **options}, {})
        return self._r.parsed(self._send(**req), Detections.of)

    # -- several images per request ----------------------------------------------------------
    def segment_many(self, images: Sequence[ImageInput], *, model: Optional[str] = None,
                     **options: Any) -> list[Segmentation | GatewayError]:
        """``POST /segment`` with several images in one request: the results in order, an
        image that failed alone as its :class:`GatewayError` (the others still answered)."""
        req = self._r.batch_request("/segment", images, {"model": model, **options}, {})
        return self._r.parsed_batch(self._send(**req), Segmentation.of)

    def landmarks_many(self, images: Sequence[ImageInput], *, faces: Optional[Any] = None,
                       model: Optional[str] = None, **options: Any) -> list[Landmarks | GatewayError]:
        """``POST /landmarks`` with several images (``faces`` applies to every image)."""
        req = self._r.batch_request("/landmarks", images, {"model": model, **options},
                                    {"faces": faces})
        return self._r.parsed_batch(self._send(**req), Landmarks.of)

    def detect_many(self, images: Sequence[ImageInput], *, model: Optional[str] = None,
                    **options: Any) -> list[Detections | GatewayError]:
        """``POST /detect`` with several images in one request."""
        req = self._r.batch_request("/detect", images, {"model": model, **options}, {})
        return self._r.parsed_batch(self._send(**req), Detections.of)


class AsyncClient:
    """The same methods as :class:`Client`, as coroutines (``async with AsyncClient(url)``)."""

    def __init__(self, base_url: str = "http://localhost:8000", *, api_key: Optional[str] = None,
                 timeout: float = 120.0, retries: int = 3, max_retry_wait: float = 30.0,
                 headers: Optional[dict[str, str]] = None,
                 transport: Optional[httpx.AsyncBaseTransport] = None) -> None:
        self._r = _Requests(base_url, api_key=api_key, timeout=timeout, retries=retries,
                            max_retry_wait=max_retry_wait, headers=headers)
        self._http = httpx.AsyncClient(headers=self._r.headers, timeout=self._r.timeout,
                                       transport=transport)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        for attempt in range(self._r.retries + 1):
            try:
                response = await self._http.request(method, url, **kwargs)
            except (httpx.ConnectError, httpx.RemoteProtocolError):
                if attempt == self._r.retries:
                    raise
                await asyncio.sleep(self._r.wait(None, attempt + 1))
                continue
            if response.status_code not in RETRY_STATUSES or attempt == self._r.retries:
                return response
            await asyncio.sleep(self._r.wait(response, attempt + 1))
        raise AssertionError("unreachable")

    async def _get(self, path: str) -> Any:
        return self._r.check(await self._send("GET", f"{self._r.base_url}{path}")).json()

    async def health(self) -> dict:
        return await self._get("/healthz")

    async def ready(self) -> bool:
        return (await self._send("GET", f"{self._r.base_url}/readyz")).status_code == 200

    async def models(self) -> list[dict]:
        return (await self._get("/v1/models"))["models"]

    async def model(self, name: str) -> dict:
        return await self._get(f"/v1/models/{name}")

    async def segment(self, image: ImageInput, *, model: Optional[str] = None, **options: Any
                      ) -> Segmentation:
        req = self._r.task_request("/segment", image, {"model": model, **options}, {})
        return self._r.parsed(await self._send(**req), Segmentation.of)

    async def label_map(self, image: ImageInput, *, model: Optional[str] = None,
                        **options: Any) -> np.ndarray:
        req = self._r.task_request("/segment", image, {"model": model, **options}, {}, RAW)
        return self._r.label_array(self._r.check(await self._send(**req)))

    async def landmarks(self, image: ImageInput, *, faces: Optional[list] = None,
                        model: Optional[str] = None, **options: Any) -> Landmarks:
        req = self._r.task_request("/landmarks", image, {"model": model, **options},
                                   {"faces": faces})
        return self._r.parsed(await self._send(**req), Landmarks.of)

    async def detect(self, image: ImageInput, *, model: Optional[str] = None, **options: Any
                     ) -> Detections:
        req = self._r.task_request("/detect", image, {"model": model, **options}, {})
        return self._r.parsed(await self._send(**req), Detections.of)

    async def segment_many(self, images: Sequence[ImageInput], *, model: Optional[str] = None,
                           **options: Any) -> list[Segmentation | GatewayError]:
        req = self._r.batch_request("/segment", images, {"model": model, **options}, {})
        return self._r.parsed_batch(await self._send(**req), Segmentation.of)

    async def landmarks_many(self, images: Sequence[ImageInput], *, faces: Optional[Any] = None,
                             model: Optional[str] = None, **options: Any
                             ) -> list[Landmarks | GatewayError]:
        req = self._r.batch_request("/landmarks", images, {"model": model, **options},
                                    {"faces": faces})
        return self._r.parsed_batch(await self._send(**req), Landmarks.of)

    async def detect_many(self, images: Sequence[ImageInput], *, model: Optional[str] = None,
                          **options: Any) -> list[Detections | GatewayError]:
        req = self._r.batch_request("/detect", images, {"model": model, **options}, {})
        return self._r.parsed_batch(await self._send(**req), Detections.of)
