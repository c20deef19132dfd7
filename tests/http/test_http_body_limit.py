"""The body limit holds for declared and for streamed (chunked) bodies, over real HTTP."""

from __future__ import annotations


import httpx

from tests.helpers import noise_png, repo_settings

LIMIT = 64 * 1024


def _png(side: int) -> bytes:
    return noise_png(side, side, seed=3)


def test_declared_and_chunked_bodies_over_the_limit_get_413(live_server, model_repo) -> None:
    url = live_server(repo_settings(model_repo, max_body_bytes=LIMIT))
    big = _png(256)  # random pixels: incompressible, ~196 KB
    assert len(big) > LIMIT

    declared = httpx.post(f"{url}/segment", content=big, headers={"Content-Type": "image/png"},
                          timeout=30)
    assert declared.status_code == 413, declared.text
    assert declared.json()["error"]["code"] == "payload_too_large"

    def chunks():  # no Content-Length: the server must count what streams in
        for i in range(0, len(big), 8192):
            yield big[i:i + 8192]

    streamed = httpx.post(f"{url}/segment", content=chunks(), headers={"Content-Type": "image/png"},
                          timeout=30)
    assert streamed.status_code == 413, streamed.text
    assert str(LIMIT) in streamed.json()["error"]["message"]

    multipart = httpx.post(f"{url}/landmarks", files={"file": ("x.png", big, "image/png")}, timeout=30)
    assert multipart.status_code == 413, multipart.text

    small = _png(64)
    assert len(small) < LIMIT
    ok = httpx.post(f"{url}/segment", content=iter([small]), headers={"Content-Type": "image/png",
                    "Accept": "image/png"}, timeout=60)
    assert ok.status_code == 200, ok.text
    assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
