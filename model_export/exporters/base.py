"""What a task's exporter gives the pipeline (:class:`Exporter`) and the values they exchange.

The pipeline (:func:`model_export.pipeline.export_model`) runs the steps every task shares:
validation, checkpoint inspection, the random-init banner, metadata, the repository entry, the
TensorRT plan and the summary. Between them it asks the request's exporter to check the task's
options, build and load the network, export it to ONNX and check parity.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from torch import nn

from service.contract import WeightsInfo

from model_export.checkpoints import inspect_checkpoint, load_checkpoint
from model_export.checkpoints.matching import CheckpointInfo
from model_export.datasets import DatasetInfo
from model_export.errors import ExportError
from model_export.progress import Log, stage

OptionsT = TypeVar("OptionsT")
ReportT = TypeVar("ReportT", bound="Parity")

#: The weights record of a random-init model.
RANDOM_INIT_WEIGHTS = WeightsInfo(random_init=True, origin="random-init", format="random-init")


@dataclass(frozen=True)
class BuildJob:
    """What the pipeline knows when the network is built."""

    arch: str
    dataset: DatasetInfo
    checkpoint: Path | None  # None: random init
    info: CheckpointInfo | None  # what inspect_checkpoint said about ``checkpoint``
    seed: int  # of the random init


@dataclass
class Built:
    """A network with its weights, and what the metadata records about it."""

    model: nn.Module
    weights: WeightsInfo
    align_corners: bool
    max_batch_size: int
    notes: list[str] = field(default_factory=list)
    #: Keyword arguments of ``metadata.build_metadata`` that set the task's protocol
    #: (segmentation ``base_size`` / ``crop_size``, detection ``detection``).
    protocol_overrides: dict[str, Any] = field(default_factory=dict)


class Parity(Protocol):
    """The parity report of an exported graph (``parity.json``)."""

    @property
    def passed(self) -> bool:
        """Every case passed."""
        ...

    def headline(self) -> str:
        """One line for the export summary."""
        ...

    def summary(self) -> str:
        """One line per case, for the console."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        ...


class Exporter(ABC, Generic[OptionsT, ReportT]):
    """One task's export steps; the options class's defaults are the task's defaults."""

    #: The task this exporter serves (``ExportRequest.task``).
    task: str
    #: The task's options class (``ExportRequest.options``).
    options_type: type[OptionsT]

    def options(self, given: object | None) -> OptionsT:
        """``given``, or the task's default options for None; ExportError for other options."""
        if given is None:
            return self.options_type()
        if not isinstance(given, self.options_type):
            raise ExportError(f"{self.task} export takes {self.options_type.__name__} options, "
                              f"not {type(given).__name__}")
        return given

    def default_checkpoint(self, arch: str | None) -> Path | None:
        """The weights file used when a request gives neither a checkpoint nor random init
        (face detection: the file shipped in a package); None: one of the two is required."""
        return None

    def inspect(self, path: Path, arch: str | None) -> CheckpointInfo:
        """What the weights file ``path`` is (PyTorch checkpoints: ``inspect_checkpoint``)."""
        return inspect_checkpoint(path)

    @abstractmethod
    def validate(self, options: OptionsT, *, opset: int, tensorrt_plan: bool) -> None:
        """Raise ExportError for settings this task cannot export."""

    @abstractmethod
    def build(self, job: BuildJob, options: OptionsT, log: Log) -> Built:
        """The network, with the checkpoint's weights or deterministic random ones."""

    @abstractmethod
    def export(self, model: nn.Module, onnx_path: Path, options: OptionsT, *, opset: int,
               log: Log) -> ReportT:
        """Write the ONNX graph of ``model`` to ``onnx_path``; return the parity report."""

    @abstractmethod
    def require_parity(self, report: ReportT) -> None:
        """Raise ``ParityError`` unless ``report`` (from :meth:`export`) passed."""

    def tier_sizes(self, options: OptionsT) -> list[tuple[int, int]]:
        """The input sizes precision tiers are measured at (the parity sizes: (h, w) for
        segmentation, resize limits for detection; landmarks have their fixed crop). Tasks
        without precision tiers (``model_export.precision.tiers.TIER_TASKS``) keep this."""
        return []


def load_weights(model: nn.Module, job: BuildJob, log: Log) -> WeightsInfo:
    """Load ``job.checkpoint`` into ``model`` strictly (logging the report); its weights record."""
    assert job.checkpoint is not None and job.info is not None
    with stage(log, "loading weights"):
        report = load_checkpoint(model, job.checkpoint)
    log(report.summary())
    return WeightsInfo(random_init=False, origin=job.info.origin, format=job.info.format,
                       file=Path(job.checkpoint).name, sha256=report.info.sha256)
