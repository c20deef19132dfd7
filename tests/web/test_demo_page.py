"""The demo page (``/demo``, ``service/web/``) driven end to end in headless Chromium for every
task, checked on its screenshots; and the API docs (``/docs``, ``/redoc``) working offline, with
Swagger UI's "Try it out" answering 200 unchanged on every task endpoint.

What each screenshot must show (measured on its pixels, not only that the page loads):

* the red RANDOM WEIGHTS banner (the test models have random weights);
* segmentation: the overlay differs from the photo over most of its area (class colours blended
  in) and carries the legend's dark panel in its top-left corner; the table lists each class with
  its palette colour and shares summing to 100 %;
* landmarks: the overlay differs from the photo only around the face: the client's box (its
  colour along the box's edges), green contour lines and red points inside it;
* detection: boxes in class colours over part of the image, one table row per detection.
"""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import photo

pytestmark = pytest.mark.timeout(600)

SIZE = (320, 240)  # w, h of the photos sent
FACE_BOX = [100, 20, 220, 170]  # around the astronaut's face at that size
MODELS = {"segment": "seg_cityscapes", "landmarks": "face_300w",
          "detect": "hrnetv2p_w18_faster_rcnn_coco_demo"}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("photos")
    out = {}
    for name in ("coffee", "astronaut"):
        path = folder / f"{name}.jpg"
        Image.fromarray(photo(name)).resize(SIZE, Image.BILINEAR).save(path, quality=95)
        out[name] = path
    return out


def _wait(predicate, timeout: float = 240.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _open(browser, url: str) -> None:
    browser.get(f"{url}/demo")
    _wait(lambda: browser.execute_script(
        "return document.getElementById('model').options.length > 0 && "
        "document.getElementById('model').value !== ''"), 60, "the model list")


def _select(browser, element_id: str, value: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element("id", element_id)).select_by_value(value)


def _element_image(element) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(element.screenshot_as_png)).convert("RGB"))


def _requests(browser) -> list[dict]:
    """The page's network requests since the last call (Chromium's performance log); a request
    the page's Content-Security-Policy stopped before it left has ``blocked: "csp"``."""
    out, by_id = [], {}
    for entry in browser.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        params = msg.get("params", {})
        if msg["method"] == "Network.requestWillBeSent":
            req = dict(params["request"], blocked=None)
            by_id[params["requestId"]] = req
            out.append(req)
        elif msg["method"] == "Network.loadingFailed" and params.get("requestId") in by_id:
            by_id[params["requestId"]]["blocked"] = params.get("blockedReason")
    return out


def _foreign(browser, url: str) -> list[str]:
    """Requests of the page to anything but the gateway that were not blocked by its CSP."""
    return [r["url"] for r in _requests(browser)
            if not r["url"].startswith((url, "data:", "blob:")) and r["blocked"] != "csp"]


def _run_task(browser, url: str, task: str, image: Path, screenshots: Path,
              setup=lambda: None) -> tuple[dict, np.ndarray, np.ndarray]:
    """Open the page, choose ``image``, ``task`` and its test model, run; returns the JSON
    answer shown, the overlay as rendered (resized back to the photo's size) and the photo."""
    _open(browser, url)
    browser.find_element("id", "file").send_keys(str(image))
    _select(browser, "task", task)
    _select(browser, "model", MODELS[task])
    setup()
    browser.find_element("id", "run").click()
    _wait(lambda: browser.execute_script(
        f"const img = document.getElementById('overlay');"
        f"return document.body.dataset.result === '{task}' && img.complete && img.naturalWidth > 0"),
        what=f"the {task} result")
    status = browser.find_element("id", "status")
    assert "error" not in status.get_attribute("class"), status.text
    browser.save_screenshot(str(screenshots / f"demo_{task}.png"))
    overlay = browser.find_element("id", "overlay")
    shown = _element_image(overlay)
    Image.fromarray(shown).save(screenshots / f"demo_{task}_overlay.png")
    rendered = np.asarray(Image.fromarray(shown).resize(SIZE, Image.BILINEAR)).astype(np.int16)
    original = np.asarray(Image.open(image).convert("RGB")).astype(np.int16)
    body = json.loads(browser.execute_script(
        "return document.getElementById('json').textContent"))
    browser.last_overlay = shown  # as displayed (for details that resizing would blur)
    return body, rendered, original


def _banner_is_loud(browser) -> None:
    banner = browser.find_element("id", "random-banner")
    assert banner.is_displayed() and "RANDOM WEIGHTS" in banner.text
    px = _element_image(banner).reshape(-1, 3).astype(int)
    red = (px[:, 0] > 150) & (px[:, 1] < 90) & (px[:, 2] < 90)
    assert red.mean() > 0.6, red.mean()  # a red bar, not a footnote
    assert banner.size["height"] >= 30 and banner.size["width"] >= 1000


def _table(browser) -> list[list[str]]:
    rows = browser.find_elements("css selector", "#table tbody tr")
    return [[td.text for td in r.find_elements("tag name", "td")] for r in rows]


def test_segmentation_page(browser, demo_url, photos, screenshots):
    body, rendered, original = _run_task(browser, demo_url, "segment", photos["coffee"],
                                         screenshots)
    _banner_is_loud(browser)
    assert body["model"]["name"] == "seg_cityscapes" and body["random_init"] is True
    diff = np.abs(rendered - original).max(-1)
    assert (diff > 25).mean() > 0.5  # class colours blended over most of the image
    # The legend in the top-left corner: white names, and swatches in the unblended palette
    # colours of the largest classes (the map blended at alpha 0.5 has no such saturated colour).
    from model_export.datasets import get_dataset

    palette = get_dataset("cityscapes").palette
    shown = browser.last_overlay.astype(int)[2:-4, 2:-4]  # (the rounded corners, page edges)
    h, w = shown.shape[:2]
    corner = shown[: h // 2, : w // 2].reshape(-1, 3)
    rest = shown[h // 2:, w // 2:].reshape(-1, 3)
    assert (corner.min(-1) > 200).sum() > 100 > (rest.min(-1) > 200).sum()
    def near(px, colour):
        return int((np.abs(px - np.array(colour)).max(-1) < 30).sum())

    saturated = [palette[c["id"]] for c in body["classes"][:5]
                 if max(palette[c["id"]]) - min(palette[c["id"]]) > 80]
    assert saturated and any(near(corner, c) > 20 and near(corner, c) > 3 * near(rest, c)
                             for c in saturated)
    rows = _table(browser)
    assert len(rows) == len(body["classes"]) > 0
    shares = [float(r[-1].rstrip("%")) for r in rows]
    assert sum(shares) == pytest.approx(100, abs=0.1 * len(rows) + 0.1)
    # Each row's swatch has its class's palette colour.
    swatches = browser.find_elements("css selector", "#table tbody .swatch")
    for c, sw in zip(body["classes"], swatches):
        assert sw.value_of_css_property("background-color") in (
            "rgba({}, {}, {}, 1)".format(*palette[c["id"]]), "rgb({}, {}, {})".format(*palette[c["id"]]))
    timings = browser.find_element("id", "timings").text
    assert "inference" in timings and "round trip" in timings


def test_landmarks_page_with_a_dropped_image_and_an_api_key(browser, demo_url, photos,
                                                           screenshots):
    data = base64.b64encode(photos["astronaut"].read_bytes()).decode()

    def setup():
        # Drop the file instead of choosing it, as a person dragging it onto the page would.
        browser.execute_script("""
            const bytes = Uint8Array.from(atob(arguments[0]), c => c.charCodeAt(0));
            const file = new File([bytes], 'dropped.jpg', {type: 'image/jpeg'});
            const dt = new DataTransfer(); dt.items.add(file);
            document.getElementById('drop').dispatchEvent(
                new DragEvent('drop', {dataTransfer: dt, bubbles: true}));""", data)
        _wait(lambda: "dropped.jpg" in browser.find_element("id", "status").text, 10, "drop")
        browser.find_element("id", "lm-faces").send_keys(json.dumps([FACE_BOX]))
        browser.find_element("id", "api-key").send_keys("secret-key-1")
        _requests(browser)  # forget the page load's requests

    body, rendered, original = _run_task(browser, demo_url, "landmarks", photos["coffee"],
                                         screenshots, setup)
    _banner_is_loud(browser)
    assert body["faces"][0]["box"] == FACE_BOX and len(body["faces"][0]["landmarks"]) == 68
    # The dropped image was sent (the chosen one was the coffee photo), with the API key.
    assert body["image_size"] == list(SIZE)
    posts = [r for r in _requests(browser) if r["method"] == "POST"]
    assert posts and posts[-1]["url"].endswith("/landmarks")
    assert posts[-1]["headers"].get("X-API-Key") == "secret-key-1"
    original = np.asarray(Image.open(photos["astronaut"]).convert("RGB")).astype(np.int16)
    # Drawn only where the face is: inside its crop square (where every point lies), the box
    # and its caption; the rest of the photo is untouched.
    changed = np.abs(rendered - original).max(-1) > 40
    x1, y1, x2, y2 = FACE_BOX
    sx1, sy1, sx2, sy2 = (int(round(v)) for v in body["faces"][0]["crop_box"])
    inside = np.zeros(changed.shape, bool)
    inside[max(0, sy1 - 3):sy2 + 3, max(0, sx1 - 3):sx2 + 3] = True
    inside[max(0, y1 - 25):y2 + 4, max(0, x1 - 4):x2 + 4] = True
    assert changed[inside].mean() > 0.01 and changed[~inside].mean() < 0.005
    # The box the client sent (not the 1.25x crop square): its colour along its left edge and
    # not along the square's.
    def cyan(strip):  # share of the strip's rows with a pixel of the box colour
        return (np.abs(strip - np.array([0, 200, 255])).max(-1) < 70).any(1).mean()

    assert cyan(rendered[y1 + 10:y2 - 10, x1 - 1:x1 + 2]) > 0.5
    assert sx1 < x1 - 10 and cyan(rendered[sy1 + 10:sy2 - 10, max(0, sx1 - 1):sx1 + 2]) < 0.2
    # Contours (green) and points (red).
    face = rendered[max(0, sy1):sy2, max(0, sx1):sx2].reshape(-1, 3)
    green = (face[:, 1] > 180) & (face[:, 0] < 140) & (face[:, 2] < 140)
    red = (face[:, 0] > 180) & (face[:, 1] < 80) & (face[:, 2] < 80)
    assert green.sum() > 30 and red.sum() > 30
    assert len(_table(browser)) == 1


def test_detection_page(browser, demo_url, photos, screenshots):
    def setup():
        browser.find_element("id", "det-threshold").send_keys("0.05")

    body, rendered, original = _run_task(browser, demo_url, "detect", photos["astronaut"],
                                         screenshots, setup)
    _banner_is_loud(browser)
    dets = body["detections"]
    assert dets and body["options"]["score_threshold"] == 0.05
    assert len(_table(browser)) == len(dets)
    changed = np.abs(rendered - original).max(-1) > 40
    assert 0.005 < changed.mean() < 0.9
    # The best box's outline is drawn in one saturated colour along its top edge.
    x1, y1, x2, y2 = (int(round(v)) for v in dets[0]["box"])
    if x2 - x1 > 20 and y1 > 2:
        edge = rendered[y1:y1 + 2, x1 + 5:x2 - 5].reshape(-1, 3)
        assert (edge.max(-1) - edge.min(-1)).mean() > 60  # coloured, not the grey photo


def test_the_page_works_offline(browser, demo_url):
    _requests(browser)
    _open(browser, demo_url)
    requests = _requests(browser)
    urls = [r["url"] for r in requests]
    assert any(u.endswith("/demo/app.js") for u in urls) and any("/v1/models" in u for u in urls)
    foreign = [u for u in urls if not u.startswith((demo_url, "data:", "blob:"))]
    assert not foreign, foreign  # the demo page asks for nothing else at all
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def test_docs_offline_and_try_it_out(browser, demo_url, photos, screenshots):
    """Swagger UI from local assets; "Try it out" with the form as it comes answers 200."""
    from selenium.webdriver.common.by import By

    _requests(browser)
    browser.get(f"{demo_url}/docs")
    _wait(lambda: browser.find_elements(By.CSS_SELECTOR, ".opblock"), 60, "Swagger UI")
    for tag, op_id in [("segmentation", "segment"), ("landmarks", "landmarks"),
                       ("detection", "detect")]:
        op = browser.find_element(By.ID, f"operations-{tag}-{op_id}")
        op.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
        _wait(lambda: op.find_elements(By.CSS_SELECTOR, "input[type=file]"), 20, "the form")
        op.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(photos["astronaut"]))
        op.find_element(By.CSS_SELECTOR, ".execute").click()
        code = _wait(lambda: [c.text for c in op.find_elements(
            By.CSS_SELECTOR, ".live-responses-table tbody .response-col_status")], 240,
            f"the {op_id} answer")
        assert code[0].startswith("200"), (op_id, code)
        op.find_element(By.CSS_SELECTOR, ".opblock-summary").click()  # fold it again
    browser.save_screenshot(str(screenshots / "docs_swagger.png"))
    assert not _foreign(browser, demo_url)
    browser.get(f"{demo_url}/redoc")
    _wait(lambda: "Semantic segmentation" in browser.find_element(By.TAG_NAME, "body").text,
          60, "ReDoc")
    browser.save_screenshot(str(screenshots / "docs_redoc.png"))
    assert not _foreign(browser, demo_url)  # (ReDoc's logo from its maker's CDN: blocked)
