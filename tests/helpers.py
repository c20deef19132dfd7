"""Helpers shared by every test folder (plain functions and classes; fixtures live in conftest.py).

Sections: images and HTTP (gateway tests), then checkpoint files (model_export tests).
"""

from __future__ import annotations

import base64
import io
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import uvicorn
from fastapi import FastAPI
from PIL import Image

from service.app import create_app
from service.http.server import server_config
from service.contract import (
    DetectionMetadata, DetectionProtocol, ExportInfo, ModelMetadata, SegmentationMetadata,
    SegmentationProtocol, TensorSpec, WeightsInfo,
)
from service.runtime.registry import ModelRegistry
from service.settings import Settings
from service.tasks.common import JSON, Answer, Limits, TaskDef, resolve_upstream, run_task

# --------------------------------------------------------------------------------------------
# Images and HTTP
# --------------------------------------------------------------------------------------------


def encode_png(rgb: np.ndarray) -> bytes:
    """An array (H x W [x C] uint8) as lossless PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def read_png(data: bytes | str) -> np.ndarray:
    """The pixels of PNG bytes (or of their base64 text)."""
    raw = base64.b64decode(data) if isinstance(data, str) else data
    return np.array(Image.open(io.BytesIO(raw)))


def noise_png(width: int, height: int, seed: int = 0) -> bytes:
    """A PNG of uniform random RGB noise (a fixed ``seed``: the same bytes every run)."""
    rgb = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return encode_png(rgb)


def flat_png(width: int, height: int, value: int = 90) -> bytes:
    """A PNG of one grey level."""
    return encode_png(np.full((height, width, 3), value, np.uint8))


def blank_png(width: int, height: int, mode: str = "RGB") -> bytes:
    """A black PNG of any Pillow ``mode``."""
    buf = io.BytesIO()
    Image.new(mode, (width, height)).save(buf, "PNG")
    return buf.getvalue()


def photo(name: str) -> np.ndarray:
    """A real photograph that scikit-image ships (``astronaut``, ``coffee``, ``chelsea``, ...)
    as H x W x 3 uint8 RGB."""
    from skimage import data

    return np.ascontiguousarray(np.asarray(getattr(data, name)())[..., :3])


def photo_logits(name: str, h: int, w: int, n_cls: int, seed: int = 0, blur: float = 0.0
                 ) -> np.ndarray:
    """(n_cls, h, w) float32 logits of a photo: each class scores closeness to a colour drawn
    from the photo, so classes follow its regions and edges as a trained model's would
    (``blur``: the photo smoothed first, Gaussian sigma in pixels, for larger regions)."""
    import cv2

    from service.imaging.resize import resize_image

    rgb = resize_image(photo(name), (h, w)).astype(np.float32)
    if blur:
        rgb = cv2.GaussianBlur(rgb, (0, 0), blur)
    rng = np.random.default_rng(seed)
    centres = rgb.reshape(-1, 3)[rng.choice(h * w, n_cls, replace=False)]
    dist = ((rgb[None] - centres[:, None, None]) ** 2).sum(-1)
    return np.ascontiguousarray(-dist / 400.0, np.float32)


def photo_png(size: tuple[int, int] = (240, 160), name: str = "coffee") -> bytes:
    """A photograph downsized to ``size = (w, h)`` (Pillow bilinear), as PNG bytes."""
    return encode_png(np.asarray(Image.fromarray(photo(name)).resize(size, Image.BILINEAR)))


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(app_or_settings: FastAPI | Settings, *, startup_timeout: float = 60.0) -> Iterator[str]:
    """Run the gateway with uvicorn in a thread; yield ``http://127.0.0.1:PORT``; stop it on exit.

    The server is configured as in production (:func:`service.http.server.server_config`: the
    h11 protocol with the ``http_*`` timeouts and limits of the app's settings, or the defaults).
    Raises RuntimeError when the server exits or is not up within ``startup_timeout`` seconds.
    """
    app = app_or_settings if isinstance(app_or_settings, FastAPI) else create_app(app_or_settings)
    port = free_port()
    # A plain FastAPI app (a test's stand-in server) gets the default server settings.
    settings = getattr(app.state, "settings", None) or Settings()
    config = server_config(app, settings, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"uvicorn on port {port} did not start within {startup_timeout:g} s")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def repo_settings(model_repo: Path, **overrides: Any) -> Settings:
    """Test settings over ``model_repo`` (single ORT thread: CI has two cores)."""
    base: dict[str, Any] = dict(repository=model_repo, ort_intra_threads=1, ort_inter_threads=1)
    base.update(overrides)
    return Settings(**base)


def detector_metadata(name: str = "fake_det") -> DetectionMetadata:
    """A detection entry as the export writes it (two graph inputs, three outputs), with a small
    resize limit so requests stay cheap."""
    return DetectionMetadata(
        name=name, arch="hrnetv2p_w18", dataset="coco",
        labels=["__background__", "person", "cat"], align_corners=False,
        inputs=[TensorSpec(name="image", dtype="FP32", dims=[3, -1, -1]),
                TensorSpec(name="image_size", dtype="INT64", dims=[2])],
        outputs=[TensorSpec(name="boxes", dtype="FP32", dims=[-1, 4]),
                 TensorSpec(name="scores", dtype="FP32", dims=[-1]),
                 TensorSpec(name="labels", dtype="INT64", dims=[-1])],
        max_batch_size=1, detection=DetectionProtocol(max_size=(128, 96)),
        weights=WeightsInfo(random_init=True, origin="random-init", format="none"),
        export=ExportInfo(model_export_version="0", torch="0", onnx="0", opset=17, exported_at="now"),
    )


def segmentation_metadata(*, base: int, crop: tuple[int, int], window: str, ac: bool, n_cls: int,
                          square: int | None = None,
                          pairs: list[tuple[int, int]] | None = None) -> SegmentationMetadata:
    """A segmentation entry with the given protocol (base size, crop, window mode,
    ``align_corners``, classes, LIP's square resize and flip pairs): the plan and merge tests'
    model, no network behind it."""
    return SegmentationMetadata(
        name="m", task="segmentation", arch="hrnetv2_w18_small_v1", dataset="x",
        labels=[f"c{i}" for i in range(n_cls)], align_corners=ac, flip_pairs=pairs or [],
        inputs=[TensorSpec(name="image", dtype="FP32", dims=[3, -1, -1])],
        outputs=[TensorSpec(name="logits", dtype="FP32", dims=[n_cls, -1, -1])],
        max_batch_size=1,
        segmentation=SegmentationProtocol(base_size=base, crop_size=crop, window=window,
                                          multi_scales=[1.0], resize_to_square=square),
        weights=WeightsInfo(random_init=True, origin="random-init", format="none"),
        export=ExportInfo(model_export_version="0", torch="0", onnx="0", opset=17,
                          exported_at="now"),
    )


class FakeDetector:
    """A backend serving :func:`detector_metadata` whose 'network' returns two fixed detections
    (scores 0.9 and 0.3) per pass: exercises the /detect request and response path without a model."""

    name = "fake"

    def __init__(self) -> None:
        self.meta: ModelMetadata = detector_metadata()

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def models(self) -> dict[str, ModelMetadata]:
        return {self.meta.name: self.meta}

    async def ready(self) -> bool:
        return True

    def providers(self) -> dict[str, list[str]]:
        return {self.meta.name: ["fake"]}

    def warnings(self) -> list[str]:
        return []

    async def infer(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(inputs["image"])
        boxes = np.array([[4, 4, 30, 20], [10, 8, 40, 30]], np.float32)
        return {"boxes": np.repeat(boxes[None], n, 0),
                "scores": np.tile(np.array([0.9, 0.3], np.float32), (n, 1)),
                "labels": np.tile(np.array([1, 2], np.int64), (n, 1))}


def limits(**overrides: int) -> Limits:
    """The default per-request limits (``Settings`` field defaults) with ``overrides``."""
    defaults = Limits.of(Settings.model_construct())
    return Limits(**{**defaults.__dict__, **overrides})


async def run_task_directly(task: TaskDef[Any, Any, Any], image: np.ndarray, meta: ModelMetadata,
                            runner: Any, options: Any, *, extras: dict[str, Any] | None = None,
                            limits: Limits | None = None, media: str = JSON,
                            models: dict[str, ModelMetadata] | None = None) -> Answer:
    """One task request without HTTP: resolve ``options`` (+ ``extras``) against ``meta`` (and
    the task's upstream against ``models``, default ``meta`` alone: landmarks without faces
    then crop the whole image), then :func:`service.tasks.common.run_task` on ``runner``
    (anything with the runner's ``run``)."""
    lim = limits if limits is not None else Limits.of(Settings.model_construct())
    resolved = task.resolve(options, extras or {}, meta, lim)
    registry = ModelRegistry(models if models is not None else {meta.name: meta},
                             Settings.model_construct())
    resolved, upstream = resolve_upstream(task, resolved, registry, lim)
    return await run_task(task, image, meta, resolved, runner, lim, media=media,
                          upstream=upstream)


def proc_stat(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name (the state first)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_memory_mb(pid: int) -> tuple[float, float]:
    """``(VmRSS, VmHWM)`` of process ``pid`` in MiB: resident now and at its peak."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def reset_peak_memory(pid: int) -> None:
    """Start process ``pid``'s peak (VmHWM) afresh at its resident size now (Linux:
    ``/proc/<pid>/clear_refs``), so that the next peak is that of what runs from here on."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used so far."""
    import os

    fields = proc_stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_system_seconds(pid: int) -> float:
    """System CPU seconds process ``pid`` has used so far (its page faults count here)."""
    import os

    return int(proc_stat(pid)[12]) / os.sysconf("SC_CLK_TCK")


def process_minor_faults(pid: int) -> int:
    """Minor page faults of process ``pid`` so far (pages it touched first or again)."""
    return int(proc_stat(pid)[7])


class GatewayProcess:
    """``python -m service`` as its own process (a replica, as in production: no shared GIL with
    the test), configured by ``HRNET_*`` variables from ``settings``; start, wait until /readyz
    answers 200, SIGKILL or stop, its CPU seconds (user + system, from /proc) and its /metrics."""

    def __init__(self, settings: dict[str, Any], log_path: Path | None = None) -> None:
        self.port = free_port()
        self.settings = {**settings, "host": "127.0.0.1", "port": self.port}
        self.log_path = log_path
        self.proc: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "GatewayProcess":
        import os
        import subprocess
        import sys

        env = {k: v for k, v in os.environ.items() if not k.startswith("HRNET_")}
        env.update({f"HRNET_{k.upper()}": str(v) for k, v in self.settings.items()})
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "service"], cwd=Path(__file__).parents[1],
                                         env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        finally:
            if self.log_path:
                out.close()
        return self

    def wait_ready(self, timeout: float = 90.0) -> "GatewayProcess":
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway on port {self.port} exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"gateway on port {self.port} not ready after {timeout:g} s")

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far."""
        return process_cpu_seconds(self.proc.pid)

    def memory_mb(self) -> tuple[float, float]:
        """``(VmRSS, VmHWM)`` in MiB: the process's resident memory now and at its peak."""
        return process_memory_mb(self.proc.pid)

    def metrics_text(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as r:
            return r.read().decode()

    def kill(self) -> None:
        """SIGKILL: a crash, as far as clients and the proxy can tell."""
        import signal

        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        """Graceful stop (SIGTERM), SIGKILL after 15 s."""
        import subprocess

        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()


@contextmanager
def gateway_process(settings: dict[str, Any]) -> Iterator[GatewayProcess]:
    """A started, ready :class:`GatewayProcess`, stopped on exit."""
    gw = GatewayProcess(settings).start()
    try:
        yield gw.wait_ready()
    finally:
        gw.stop()


def host_port(url: str) -> tuple[str, int]:
    """``("127.0.0.1", PORT)`` of a ``http://127.0.0.1:PORT`` base URL."""
    host, _, port = url.removeprefix("http://").rstrip("/").rpartition(":")
    return host, int(port)


def read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, bool]:
    """Everything ``sock`` receives until the peer closes it (``closed`` True) or ``timeout``
    seconds pass (False). A reset counts as closed."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return data, False
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return data, False
        except (ConnectionResetError, BrokenPipeError):
            return data, True
        if not chunk:
            return data, True
        data += chunk


def raw_exchange(url: str, data: bytes, *, timeout: float = 10.0) -> tuple[float, bytes, bool]:
    """Send ``data`` on a fresh TCP connection to the server of ``url`` and read until it closes:
    ``(seconds until closed or timeout, bytes received, closed)``."""
    t0 = time.monotonic()
    with socket.create_connection(host_port(url), timeout=timeout) as sock:
        if data:
            sock.sendall(data)
        received, closed = read_until_closed(sock, timeout)
    return time.monotonic() - t0, received, closed


def http_status(response: bytes) -> int:
    """The status code of a raw HTTP/1.1 response (0 when there is none)."""
    head = response.split(b"\r\n", 1)[0].split()
    return int(head[1]) if len(head) >= 2 and head[0].startswith(b"HTTP/") else 0


def http_json(response: bytes) -> Any:
    """The JSON body of a raw HTTP/1.1 response (``Content-Length`` framed)."""
    import json

    return json.loads(response.split(b"\r\n\r\n", 1)[1])


def grace_hopper() -> np.ndarray:
    """Grace Hopper's portrait (public domain, US Navy) from matplotlib's sample data, 512x600."""
    import matplotlib.cbook

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        return np.asarray(Image.open(f).convert("RGB"))


def face_photo(name: str) -> np.ndarray:
    """``astronaut``, ``camera`` (grey -> RGB) or ``grace_hopper``: real photos with one face."""
    if name == "grace_hopper":
        return grace_hopper()
    from skimage import data

    img = np.asarray(getattr(data, name)())
    return np.ascontiguousarray(np.stack([img] * 3, -1) if img.ndim == 2 else img[..., :3])


#: Hand-checked face boxes [x1, y1, x2, y2] (forehead/hairline to chin, cheek or ear to cheek),
#: read off the photos on a 20 px grid. The cameraman's face is half hidden by his camera: from
#: his ear to his nose and hand.
FACE_BOXES: dict[str, list[float]] = {
    "astronaut": [180, 72, 270, 162],
    "camera": [188, 118, 262, 196],
    "grace_hopper": [165, 140, 365, 320],
}

#: The multi-face photo: head-and-shoulders crops (y0, y1, x0, x1) of the three portraits side by
#: side, 960x360, like a group photo of three people (no photo of several people ships in the
#: packages this project installs, so the group is composed of real photos).
GROUP_CROPS: list[tuple[str, tuple[int, int, int, int]]] = [
    ("astronaut", (0, 360, 65, 385)),
    ("camera", (0, 360, 65, 385)),
    ("grace_hopper", (50, 410, 105, 425)),
]


def group_photo() -> tuple[np.ndarray, list[list[float]]]:
    """The multi-face photo and its hand-checked boxes (:data:`FACE_BOXES` moved with the crops),
    left to right."""
    parts, boxes, x = [], [], 0
    for name, (y0, y1, x0, x1) in GROUP_CROPS:
        parts.append(face_photo(name)[y0:y1, x0:x1])
        bx1, by1, bx2, by2 = FACE_BOXES[name]
        boxes.append([bx1 - x0 + x, by1 - y0, bx2 - x0 + x, by2 - y0])
        x += x1 - x0
    return np.ascontiguousarray(np.concatenate(parts, axis=1)), boxes


def box_iou(a: list[float], b: list[float]) -> float:
    """IoU of two ``[x1, y1, x2, y2]`` boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


# (section boundary: keep the blank lines above and below, two people edit the two sections)



# --------------------------------------------------------------------------------------------
# Checkpoint files (model_export tests)
# --------------------------------------------------------------------------------------------
# Checkpoint files as the official repositories and OpenMMLab write them, for the loader tests.
# torch is imported inside the helpers: gateway tests importing this module never pay for it.

from pathlib import Path  # noqa: E402 - this section's own imports
from typing import Any  # noqa: E402


def save_checkpoint(obj: Any, path: Path) -> Path:
    """``torch.save(obj, path)``; returns ``path``."""
    import torch

    torch.save(obj, path)
    return path


def official_seg_checkpoint(sd: dict[str, Any], *, num_batches_tracked: bool = True
                            ) -> dict[str, Any]:
    """A segmentation state dict laid out as HRNet-Semantic-Segmentation releases are: keys
    under ``model.`` (the training wrapper) and the criterion's class weights under ``loss.``;
    without ``num_batches_tracked`` entries as in the oldest releases."""
    import torch

    out: dict[str, Any] = {f"model.{k}": v for k, v in sd.items()
                           if num_batches_tracked or not k.endswith("num_batches_tracked")}
    out["loss.criterion.weight"] = torch.rand(19)
    return out


def to_checkpoint(model: Any, fmt: str) -> dict[str, Any]:
    """An ``HRNetFasterRCNN`` (or Mask / Cascade / Cascade Mask R-CNN) as a checkpoint of
    detection format ``fmt`` (``hrnet-det``, ``mmdet-v1``, ``mmdet-v2``, or ``mmdet-v3``: the
    2.x key names in an MMEngine 3.x file): the inverse of the loader's mapping, written from the
    official key names."""
    import re

    import torch

    from model_export.checkpoints.detection import FORMAT_CONVENTION

    if fmt not in (*FORMAT_CONVENTION, "mmdet-v3"):
        raise ValueError(f"format must be one of {sorted(FORMAT_CONVENTION)} or mmdet-v3")
    v2 = fmt in ("mmdet-v2", "mmdet-v3")
    sd: dict[str, Any] = {}
    roi = "roi_head." if v2 else ""
    neck_red = "neck.reduction_conv.0." if fmt == "hrnet-det" else "neck.reduction_conv.conv."
    cascade = isinstance(model.roi_heads.box_predictor, torch.nn.ModuleList)
    n_masks = len(getattr(model, "mask_heads", ()))
    for k, v in model.state_dict().items():
        m = re.fullmatch(r"roi_heads\.(box_head|box_predictor)\.(?:(\d)\.)?(\w+)\.(weight|bias)", k)
        mm = re.fullmatch(r"mask_heads\.(\d)\.(convs\.\d|upsample|conv_logits)\.(weight|bias)", k)
        if k.startswith("backbone.body."):
            sd["backbone." + k[len("backbone.body."):]] = v
        elif k.startswith("backbone.neck.reduction_conv.0."):
            sd[neck_red + k.rsplit(".", 1)[1]] = v
        elif k.startswith("backbone.neck.fpn_conv."):
            i, name = k.split(".")[-2:]
            sd[f"neck.fpn_convs.{i}.conv.{name}" if v2 else f"neck.fpn_conv.{i}.{name}"] = v
        elif k.startswith("rpn.head."):
            for src, dst in (("rpn.head.conv.0.0.", "rpn_head.rpn_conv."),
                             ("rpn.head.cls_logits.", "rpn_head.rpn_cls."),
                             ("rpn.head.bbox_pred.", "rpn_head.rpn_reg.")):
                if k.startswith(src):
                    sd[dst + k[len(src):]] = v
        elif m:
            _, stage, layer, name = m.groups()
            head = roi + "bbox_head." + (f"{stage}." if stage is not None else "")
            layer = {"fc6": "shared_fcs.0", "fc7": "shared_fcs.1", "cls_score": "fc_cls",
                     "bbox_pred": "fc_reg"}[layer]
            if v2 and layer == "fc_cls":
                v = torch.cat([v[1:], v[:1]])  # background last
            elif v2 and layer == "fc_reg" and not cascade:
                v = v[4:]  # no background row
            sd[f"{head}{layer}.{name}"] = v
        elif mm:
            stage, layer, name = mm.groups()
            head = roi + "mask_head." + (f"{stage}." if n_masks > 1 else "")
            if layer.startswith("convs."):
                layer += ".conv"  # ConvModule
            elif v2 and layer == "conv_logits":
                v = v[1:]  # 80 channels, no background
            sd[f"{head}{layer}.{name}"] = v
        else:
            raise AssertionError(f"unmapped model key {k}")
    sd = {k: v.clone() for k, v in sd.items()}
    if fmt == "mmdet-v3":  # MMEngine: meta with dataset_meta, training state beside the weights
        return {"meta": {"mmdet_version": "3.3.0", "dataset_meta": {"classes": ["person"]}},
                "state_dict": sd, "message_hub": {}, "optimizer": {}, "param_schedulers": []}
    if fmt != "hrnet-det":  # later versions drop nothing; v0.6 files may lack the counters
        return {"meta": {"mmdet_version": "2.28.0" if v2 else "1.2.0"}, "state_dict": sd}
    return {"meta": {"mmdet_version": "0.6.0"},
            "state_dict": {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}}
