"""Python client of the hrnet-serve gateway (segmentation, facial landmarks, detection).

    from hrnet_client import Client
    with Client("http://localhost:8000") as client:
        labels = client.label_map("street.jpg")     # H x W NumPy array
"""

from hrnet_client.client import AsyncClient, Client, GatewayError
from hrnet_client.images import decode_png, encode_png
from hrnet_client.results import (
    Detection, Detections, Face, Landmarks, ModelUsed, SegmentClass, Segmentation,
)

__all__ = [
    "AsyncClient", "Client", "Detection", "Detections", "Face", "GatewayError", "Landmarks",
    "ModelUsed", "SegmentClass", "Segmentation", "decode_png", "encode_png",
]
__version__ = "0.1.0"
