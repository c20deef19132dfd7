"""Headless Chromium (Debian's ``chromium`` + ``chromedriver``, installed by
``scripts/install_chromium.sh``) driven by Selenium, and a gateway serving all three test tasks.

``browser``: one Chromium per module, offline: every host name except 127.0.0.1 resolves to
nothing, background networking is off, and the performance log records every request the page
makes. ``demo_url``: a gateway over the session's segmentation + landmark repository and its
detection model (one repository of symbolic links). Screenshots go to ``$HRNET_SCREENSHOTS``
(default: a temporary folder).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from tests.helpers import repo_settings, serve

CHROMIUM = os.environ.get("HRNET_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("HRNET_CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--disable-extensions", "--disable-default-apps",
    "--window-size=1400,1000", "--force-device-scale-factor=1", "--hide-scrollbars",
    # Offline for real: no name resolves except the gateway's address.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]


@pytest.fixture(scope="module")
def browser() -> Iterator["object"]:
    """A headless Chromium (Selenium ``WebDriver``); skipped where Chromium is not installed
    (outside CI only: ``scripts/test.sh`` installs it, and CI fails without it)."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing} not installed: run scripts/install_chromium.sh")
        pytest.skip(f"{missing} not installed (scripts/install_chromium.sh)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="hrnet-chromium-")
    for flag in FLAGS + [f"--user-data-dir={profile}"]:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def demo_url(model_repo: Path, det_repo: Path, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[str]:
    """A gateway serving every session test model (segmentation, landmarks, detection)."""
    repo = tmp_path_factory.mktemp("all_models")
    for entry in [*model_repo.iterdir(), *det_repo.iterdir()]:
        if entry.is_dir():
            (repo / entry.name).symlink_to(entry)
    with serve(repo_settings(repo, request_timeout_s=300)) as url:
        yield url


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the tests write their screenshots."""
    folder = os.environ.get("HRNET_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path
