"""Multipart uploads are parsed in memory up to the body limit (service/http/forms.py): Starlette
would spool a file part over 1 MB to a temporary file that the endpoint then reads back whole."""

from __future__ import annotations

import asyncio
import tempfile

import pytest
from starlette.requests import Request

from service.http import forms
from service.settings import Settings
from tests.helpers import noise_png

BOUNDARY = b"hrnet-test-boundary"


def _body(png: bytes) -> bytes:
    return (b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="options"\r\n\r\n{"a": 1}\r\n'
            b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="file"; filename="a.png"'
            b"\r\nContent-Type: image/png\r\n\r\n" + png + b"\r\n--" + BOUNDARY + b"--\r\n")


def _request(body: bytes, chunk: int = 65536) -> Request:
    scope = {"type": "http", "method": "POST", "path": "/segment", "query_string": b"",
             "headers": [(b"content-type", b"multipart/form-data; boundary=" + BOUNDARY),
                         (b"content-length", str(len(body)).encode())]}
    chunks = [body[i:i + chunk] for i in range(0, len(body), chunk)]

    async def receive() -> dict:
        if not chunks:
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": chunks.pop(0), "more_body": bool(chunks)}

    return Request(scope, receive)


async def _parse(body: bytes, settings: Settings) -> tuple[bytes, str]:
    form = await forms._parse_form(_request(body), settings)
    try:
        return await form["file"].read(), form["options"]
    finally:
        await form.close()


def test_a_large_upload_stays_in_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    png = noise_png(1024, 1024, seed=5)  # incompressible: ~3 MB, past Starlette's 1 MB spool
    assert len(png) > 2 * 1024 * 1024

    def no_disk(*args, **kwargs):
        raise AssertionError("the upload was spooled to a temporary file")

    monkeypatch.setattr(tempfile, "TemporaryFile", no_disk)
    data, options = asyncio.run(_parse(_body(png), Settings(max_body_bytes=8 * 1024 * 1024)))
    assert data == png and options == '{"a": 1}'


def test_without_the_in_memory_limit_the_same_upload_would_spool(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above can fail: with a spool smaller than the part, the parse writes a file."""
    png = noise_png(1024, 1024, seed=5)
    written = []
    real = tempfile.TemporaryFile

    def counting(*args, **kwargs):
        written.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", counting)
    data, _ = asyncio.run(_parse(_body(png), Settings(max_body_bytes=1024 * 1024)))
    assert data == png and written
