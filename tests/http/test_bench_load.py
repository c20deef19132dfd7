"""benchmarks/bench_load.py: bounded (caps, loopback only) and a few seconds of it really run
against a gateway process over the session's models, with no error."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("bench_load", ROOT / "benchmarks" / "bench_load.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.mark.parametrize("url", ["http://10.0.0.1:8000", "http://example.com", "http://192.168.1.2"])
def test_only_loopback_is_loaded(url: str) -> None:
    with pytest.raises(SystemExit):
        _bench().loopback_only(url)
    assert _bench().loopback_only("http://127.0.0.1:1") == "http://127.0.0.1:1"


def test_a_short_run(model_repo: Path, tmp_path: Path) -> None:
    bench = _bench()
    assert (bench.MAX_CONCURRENCY, bench.MAX_DURATION_S, bench.MAX_REQUESTS) == (64, 1800.0, 1_000_000)
    summary = bench.main(["--repo", str(model_repo), "--concurrency", "2", "--duration", "3",
                          "--warmup", "1", "--json", str(tmp_path / "load.json"),
                          "--gateway-setting", "ort_intra_threads=1"])
    assert summary["requests"] > 0 and summary["errors"] == 0, summary
    assert set(summary["gateway"]) == {"start", "middle", "end", "idle"}
    assert summary["gateway"]["end"]["rss_mib"] > 0 and summary["gateway"]["end"]["threads"] > 0
    assert {"p50", "p95", "p99"} == set(summary["latency_ms"])
    assert (tmp_path / "load.json").is_file()
