"""COCO detection labels in the order every MMDetection version (and HRNet-Object-Detection) uses.

``COCO_CLASSES`` are the 80 contiguous classes (``CocoDataset.CLASSES``); the exported detection
graphs emit labels 1..80 indexing :data:`COCO_LABELS`, which puts ``"__background__"`` at 0.
``COCO_CATEGORY_IDS`` maps the same contiguous index to the official COCO ``category_id``
(1..90 with gaps), as needed for COCO result files.
"""

from __future__ import annotations

COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)

BACKGROUND = "__background__"

#: Index 0 is the background; 1..80 are the classes (the graph's ``labels`` output indexes this).
COCO_LABELS: tuple[str, ...] = (BACKGROUND, *COCO_CLASSES)

#: Official COCO category ids of the 80 classes, in the order of :data:`COCO_CLASSES`.
COCO_CATEGORY_IDS: tuple[int, ...] = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28,
    31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55,
    56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84,
    85, 86, 87, 88, 89, 90,
)

#: Graph label (0..80, 0 = background) -> COCO category id (0 for the background).
COCO_LABEL_IDS: tuple[int, ...] = (0, *COCO_CATEGORY_IDS)

assert len(COCO_CLASSES) == 80 and len(COCO_CATEGORY_IDS) == 80
