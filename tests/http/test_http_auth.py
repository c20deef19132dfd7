"""Optional API keys (HRNET_API_KEYS) over real HTTP: both header forms, several keys (rotation),
401 in the JSON shape with WWW-Authenticate, the agreed public paths, /metrics protectable,
constant-time comparison against every key, and no authentication when no key is set."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from service.app import create_app
from service.http import auth
from service.settings import Settings
from tests.helpers import FakeDetector, flat_png, serve

KEYS = ["old-key-0123456789abcdef", "new-key-fedcba9876543210"]
PNG = flat_png(40, 30)


def _gateway(tmp_path: Path, **settings):  # type: ignore[no-untyped-def]
    return serve(create_app(Settings(repository=tmp_path, **settings), backend=FakeDetector()))


@pytest.fixture(scope="module")
def keyed_url(tmp_path_factory: pytest.TempPathFactory):
    with _gateway(tmp_path_factory.mktemp("none"), api_keys=KEYS) as url:
        yield url


def _detect(url: str, **headers: str) -> httpx.Response:
    return httpx.post(f"{url}/detect", content=PNG, headers={"content-type": "image/png", **headers},
                      timeout=10)


def _assert_401(r: httpx.Response, words: str) -> None:
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.headers["content-type"] == "application/json"
    err = r.json()["error"]
    assert err["code"] == "unauthorized" and words in err["message"], err


def test_missing_key_is_401(keyed_url: str) -> None:
    _assert_401(_detect(keyed_url), "API key is required")
    _assert_401(httpx.get(f"{keyed_url}/v1/models", timeout=10), "API key is required")


@pytest.mark.parametrize("headers", [
    {"authorization": "Bearer wrong"}, {"x-api-key": "wrong"}, {"authorization": f"Basic {KEYS[0]}"},
    {"authorization": f"Bearer {KEYS[0]}x"}, {"x-api-key": KEYS[1][:-1]}, {"authorization": "Bearer"},
], ids=["bearer_wrong", "x_api_key_wrong", "basic_scheme", "bearer_longer", "x_api_key_prefix",
        "bearer_empty"])
def test_wrong_key_is_401(keyed_url: str, headers: dict[str, str]) -> None:
    r = _detect(keyed_url, **headers)
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("key", KEYS, ids=["old", "new"])
@pytest.mark.parametrize("form", ["bearer", "x_api_key"])
def test_every_configured_key_works_in_both_forms(keyed_url: str, key: str, form: str) -> None:
    headers = {"authorization": f"bearer {key}"} if form == "bearer" else {"x-api-key": key}
    r = _detect(keyed_url, **headers)
    assert r.status_code == 200, r.text
    assert len(r.json()["detections"]) >= 1


def test_public_paths_need_no_key(keyed_url: str) -> None:
    assert httpx.get(f"{keyed_url}/healthz", timeout=10).status_code == 200
    assert httpx.get(f"{keyed_url}/readyz", timeout=10).status_code == 200
    assert httpx.get(f"{keyed_url}/openapi.json", timeout=10).status_code == 200
    assert httpx.get(f"{keyed_url}/docs", timeout=10).status_code == 200
    assert httpx.get(f"{keyed_url}/redoc", timeout=10).status_code == 200
    # The demo page and its assets, and the docs' assets, are public.
    assert httpx.get(f"{keyed_url}/demo", timeout=10).status_code == 200
    assert httpx.get(f"{keyed_url}/demo/app.js", timeout=10).status_code == 200
    assert httpx.get(f"{keyed_url}/", timeout=10).status_code != 401
    # ... but nothing else: an unknown path does not reveal whether it exists.
    assert httpx.get(f"{keyed_url}/nope", timeout=10).status_code == 401
    assert httpx.get(f"{keyed_url}/demox", timeout=10).status_code == 401


def test_the_public_list_is_the_documented_one() -> None:
    assert auth.PUBLIC_PATHS >= {"/healthz", "/readyz", "/docs", "/redoc", "/openapi.json", "/",
                                 "/demo"}
    assert auth.PUBLIC_PREFIXES == ("/demo/", "/docs/assets/")
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    security = readme.split("## Security", 1)[1].split("\n## ", 1)[0]
    for path in ("/healthz", "/readyz", "/docs", "/redoc", "/openapi.json", "/demo", "/metrics",
                 "HRNET_API_KEYS", "HRNET_METRICS_PUBLIC", "X-API-Key", "Authorization: Bearer",
                 "deploy/nginx/"):
        assert path in security, path


def test_metrics_need_a_key_unless_public(keyed_url: str, tmp_path: Path) -> None:
    _assert_401(httpx.get(f"{keyed_url}/metrics", timeout=10), "API key")
    r = httpx.get(f"{keyed_url}/metrics", headers={"x-api-key": KEYS[1]}, timeout=10)
    assert r.status_code == 200 and "hrnet_requests_total" in r.text
    with _gateway(tmp_path, api_keys=KEYS, metrics_public=True) as url:
        assert httpx.get(f"{url}/metrics", timeout=10).status_code == 200
        assert _detect(url).status_code == 401


def test_refused_before_the_body_is_read(keyed_url: str) -> None:
    """A keyless upload over the body limit is 401 (not 413): nothing of it was read."""
    r = httpx.post(f"{keyed_url}/detect", content=b"\0" * (21 * 1024 * 1024),
                   headers={"content-type": "image/png"}, timeout=30)
    assert r.status_code == 401


def test_no_keys_means_no_authentication(tmp_path: Path) -> None:
    with _gateway(tmp_path) as url:
        assert _detect(url).status_code == 200
        assert httpx.get(f"{url}/metrics", timeout=10).status_code == 200


def test_comparison_is_constant_time_over_every_key(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = auth.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    keys = [k.encode() for k in KEYS] + [b"third"]
    assert auth.key_matches(KEYS[0].encode(), keys)  # the first key matches ...
    assert len(calls) == 3  # ... and every key was still compared
    calls.clear()
    assert not auth.key_matches(b"nope", keys) and len(calls) == 3


def test_blank_keys_are_refused_by_the_settings() -> None:
    with pytest.raises(ValueError):
        Settings(api_keys=[""])
    with pytest.raises(ValueError):
        Settings(api_keys=[" padded "])
    assert "old-key" not in repr(Settings(api_keys=KEYS))
