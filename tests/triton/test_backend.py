"""TritonBackend's contract details: unreachable server, overload, unknown model, deadline."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from service.errors import ModelNotFound, Overloaded, Timeout, Unavailable
from service.runtime.backends.triton import TritonBackend
from service.settings import Settings
from tests.triton.harness import TritonServer, free_port

PROTOCOLS = ("grpc", "http")


def _backend(url: str, protocol: str, **attrs: float) -> TritonBackend:
    backend = TritonBackend(Settings(backend="triton", triton_url=url, triton_protocol=protocol,
                                     retry_after_s=2))
    for key, value in attrs.items():
        setattr(backend, key, value)
    return backend


def _image(n: int = 1) -> dict[str, np.ndarray]:
    return {"image": np.full((n, 3, 96, 96), 128, np.float32)}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unreachable_triton_gives_503_fast(protocol: str) -> None:
    """Nothing listening: start() does not raise, not ready, and infer() is a quick 503."""

    async def scenario() -> None:
        backend = _backend(f"127.0.0.1:{free_port()}", protocol, startup_wait_s=0.0)
        try:
            await asyncio.wait_for(backend.start(), 10)
            assert await backend.ready() is False
            assert await backend.models() == {}
            with pytest.raises(Unavailable) as info:
                await asyncio.wait_for(backend.infer("seg_lip", _image()), 10)
            assert info.value.status_code == 503 and info.value.retry_after == 2
        finally:
            await backend.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_overload_unknown_model_and_deadline(protocol: str, triton_server: TritonServer) -> None:
    """Beyond max_in_flight -> 429; a model Triton lacks -> 404; a missed deadline -> 504."""

    async def scenario() -> None:
        backend = _backend(triton_server.url(protocol), protocol, max_in_flight=1)
        try:
            await asyncio.wait_for(backend.start(), 30)
            assert await backend.ready() is True
            assert {"seg_lip", "face_300w"} <= set(await backend.models())
            # What runs each model: Triton's backend (the CPU twin: python) and instance kind.
            assert backend.providers()["seg_lip"][:2] == ["triton:python", "KIND_CPU"]
            results = await asyncio.gather(
                backend.infer("seg_lip", _image()), backend.infer("seg_lip", _image()),
                return_exceptions=True,
            )
            overloaded = [r for r in results if isinstance(r, Overloaded)]
            served = [r for r in results if isinstance(r, dict)]
            assert len(overloaded) == 1 and len(served) == 1, results
            assert overloaded[0].status_code == 429 and overloaded[0].retry_after == 2
            assert served[0]["logits"].shape == (1, 20, 24, 24)
            assert served[0]["logits"].flags.writeable

            with pytest.raises(ModelNotFound):
                await backend.infer("no_such_model", _image())

            backend.timeout_s = 1e-4
            with pytest.raises(Timeout):
                await backend.infer("face_300w", {"image": np.zeros((1, 3, 256, 256), np.float32)})
        finally:
            await backend.close()

    asyncio.run(scenario())
