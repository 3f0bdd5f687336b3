"""The registry: what an architecture, a data set and a training recipe are, and where each came from."""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeAlias

from zoo.errors import PluginWarning, UnknownName, ZooError, describe
from zoo.images import resize
from zoo.names import normalize, resolve
from zoo.polarity import check_invert, should_invert

if TYPE_CHECKING:
    import click
    from torch import Tensor, nn

__all__ = [
    "DEFAULT_ULPS",
    "PRECISIONS",
    "Architecture",
    "Dataset",
    "Exporter",
    "Plugin",
    "Recipe",
    "Registry",
    "Runtime",
    "Shape",
    "Weights",
    "check_name",
]

Shape = tuple[int, int, int]
"""An image shape as channels, height, width."""

Split = Literal["train", "test"]
Builder = str | Callable[..., "nn.Module"]
Writer = str | Callable[["nn.Module", "Tensor", dict[str, Any], Path, int], None]
Runner = str | Callable[[Path], tuple[Callable[[Any], Any], dict[str, Any]]]
Loader = str | Callable[[Split, Path, bool], "tuple[Tensor, Tensor]"]
Reader = str | Callable[[Path], dict[str, Any]]
RuntimeLoader = str | Callable[[Path, str, int], Callable[[Any], Any]]

_NAME = re.compile(r"[a-z][a-z0-9_]*")
_COMMAND = re.compile(r"[a-z][a-z0-9-]*")
_REFERENCE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
_SHA256 = re.compile(r"[0-9a-f]{64}")
MAX_WEIGHTS_BYTES = 1 << 30
"""The largest weights file zoo fetches: a download is cut off at its declared size, and this bounds that size."""

MAX_CALIBRATION_IMAGES = 16_384
"""The most training images an export format's writer may ask for (``Exporter.calibration_images``): they are
held in memory, normalised, while the file is written."""

PRECISIONS = ("float32", "bfloat16", "float16", "int8")
"""What an exported file's numbers can be (``Exporter.precision``)."""

DEFAULT_ULPS = 128.0
"""How far a float32 export may differ from its model (``zoo export --ulps``): this many float32 rounding
steps at each output row's scale (see zoo.exporting.rounding_steps)."""


def _import(target: str) -> Any:
    """Resolve a ``"package.module:attribute"`` reference."""
    module, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def check_name(kind: str, name: str, aliases: tuple[str, ...]) -> None:
    for spelling in (name, *aliases):
        if not _NAME.fullmatch(spelling):
            raise ValueError(
                f"{kind} name {spelling!r} must be lower case letters, digits and '_', starting with a letter"
            )


class _Registered:
    """What architectures, data sets and export formats share: the plugin that registered each, checks of what
    the plugin gave, and its ``"module:attribute"`` references resolved on first use, naming both when broken."""

    kind: ClassVar[str]
    references: ClassVar[tuple[str, ...]]
    """The fields that take a callable or a ``"module:attribute"`` string."""
    name: str
    aliases: tuple[str, ...]
    provided_by = ""
    """The distribution and version that registered it (set by ``Registry.add``)."""

    def validate(self) -> None:
        """Raise ValueError naming what is wrong; the registry turns down an item that fails."""
        check_name(self.kind, self.name, self.aliases)
        for attr in self.references:
            target = getattr(self, attr)
            if not (callable(target) or (isinstance(target, str) and _REFERENCE.fullmatch(target))):
                raise ValueError(f"{attr} must be a callable or a 'package.module:attribute' string, got {target!r}")

    def resolve(self, attr: str) -> Callable[..., Any]:
        """The callable ``attr`` names, imported if it is a string; a ZooError names the item and its plugin."""
        target = getattr(self, attr)
        if callable(target):
            return target  # type: ignore[no-any-return]
        where = f"{self.kind} {self.name}" + (f" from {self.provided_by}" if self.provided_by else "")
        try:
            found = _import(target)
        except Exception as exc:
            raise ZooError(f"{where}: its {attr} {target!r} does not import ({describe(exc)}); "
                           f"fix the reference in the plugin") from exc  # fmt: skip
        if not callable(found):
            raise ZooError(f"{where}: its {attr} {target!r} is a {type(found).__name__}, not a callable; "
                           f"fix the reference in the plugin")  # fmt: skip
        return found  # type: ignore[no-any-return]


def format_shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


@dataclass(frozen=True)
class Recipe:
    """How to train an architecture: the settings the trainer uses when none are given."""

    optimizer: str = "adamw"
    """``adamw``, ``adam`` or ``sgd`` (give ``sgd`` a larger ``lr``: the defaults are for Adam)."""
    lr: float = 1e-3
    """The peak learning rate (``onecycle``), or the constant one."""
    batch_size: int = 128
    """Images per optimizer step, over all processes together."""
    epochs: int = 5
    """Passes over the training split."""
    schedule: str = "onecycle"
    """The learning rate over the run: ``constant``, ``onecycle`` (warm up, then anneal) or ``cosine``."""
    warmup: float = 0.25
    """Fraction of the steps over which ``onecycle`` warms up to the peak learning rate."""
    weight_decay: float = 0.0
    """Decoupled weight decay for ``adamw``; L2 for ``adam`` and ``sgd``."""
    val_split: float = 0.1
    """Fraction of the training split held out for validation."""
    seed: int = 0
    """Every random draw (initial weights, validation split, batches, augmentation) follows from it."""
    dataset: str | None = None
    """The data set the recipe was written for, if any."""
    limit: int | None = None
    """Train on a random subset of this many training images."""
    augment: str = "none"
    """Batched augmentation: ``none``, ``crop`` (random crops after padding), ``flip`` (mirror images at random),
    ``affine`` (a random rotation, shift, scale and shear per image, for digits), ``erase`` (a random rectangle
    erased to the mean, as torchvision's RandomErasing), or ``crop_flip``, ``crop_erase``, ``flip_erase``,
    ``crop_flip_erase``, ``affine_erase``."""
    label_smoothing: float = 0.0
    """The share of each target spread evenly over all classes (``nn.CrossEntropyLoss(label_smoothing=...)``)."""
    ema: float = 0.0
    """Decay of an exponential moving average of the weights (0.999, say), updated every step, validated,
    checkpointed and tested as the model; 0 for none."""
    notes: str = ""
    """Where the settings come from, shown by ``zoo info ARCH``."""

    def describe(self) -> str:
        warmup = f" warmup={self.warmup:g}" if self.schedule == "onecycle" else ""
        text = (
            f"{self.optimizer} lr={self.lr:g} batch={self.batch_size} epochs={self.epochs} schedule={self.schedule}"
            f"{warmup} weight_decay={self.weight_decay:g} val={self.val_split:g} seed={self.seed}"
        )
        if self.limit:
            text += f" limit={self.limit}"
        if self.augment != "none":
            text += f" augment={self.augment}"
        if self.label_smoothing:
            text += f" label_smoothing={self.label_smoothing:g}"
        if self.ema:
            text += f" ema={self.ema:g}"
        return text + (f" on {self.dataset}" if self.dataset else "")


@dataclass(frozen=True)
class Architecture(_Registered):
    """A model architecture: a builder plus what a user needs to know about it.

    ``builder`` is called as ``builder(input_shape=(C, H, W), num_classes=N)``
    and returns an ``nn.Module`` mapping ``N×C×H×W`` float images to ``N×classes``
    scores (logits or log-probabilities).
    """

    name: str
    """Lower-case letters, digits and ``_``, starting with a letter; unique among architectures."""
    builder: Builder
    """A callable, or a ``"module:attribute"`` string imported on first use (keeps ``zoo list`` fast),
    called as ``builder(input_shape=(C, H, W), num_classes=N)``; it raises ValueError for a shape it cannot take."""
    summary: str
    """One line, shown by ``zoo list`` and ``zoo info``."""
    aliases: tuple[str, ...] = ()
    """Other names users may type (``lenet`` for ``lenet_bn``); the same rules as ``name``."""
    source: str = ""
    """Where the design comes from (a paper, a tutorial's URL), shown by ``zoo info``."""
    input_shape: Shape = (1, 28, 28)
    """The shape the architecture was designed for."""
    num_classes: int = 10
    """The class count it was designed for, at least 2 (``zoo export --untrained`` and ``zoo check`` use it)."""
    default_recipe: Recipe = Recipe()
    """The settings ``zoo train ARCH`` uses; without a data set on the command line, its ``dataset``."""
    tutorial_recipe: Recipe | None = None
    """The original tutorial's exact settings, to reproduce it."""
    notes: str = ""
    """Anything else a user should know, shown by ``zoo info``."""

    kind: ClassVar[str] = "architecture"
    references: ClassVar[tuple[str, ...]] = ("builder",)

    def validate(self) -> None:
        super().validate()
        if len(self.input_shape) != 3 or min(self.input_shape) < 1 or self.num_classes < 2:
            raise ValueError("input_shape must be (channels, height, width) and num_classes at least 2")

    def build(self, input_shape: Shape | None = None, num_classes: int | None = None, **kwargs: Any) -> nn.Module:
        """Build the model for images of ``input_shape`` and ``num_classes`` classes.

        A builder that cannot take the shape raises ValueError; it reaches the user as a ZooError.  The model
        runs once on a blank image (on the current device: under ``torch.device("meta")`` nothing is allocated),
        so that a builder that ignores ``input_shape`` or ``num_classes`` is caught here, not an epoch later.
        """
        import torch

        shape, classes = tuple(input_shape or self.input_shape), num_classes or self.num_classes
        try:
            model = self.resolve("builder")(input_shape=shape, num_classes=classes, **kwargs)
        except ValueError as exc:
            raise ZooError(f"{exc}; pick another architecture or data set") from exc
        training = model.training
        try:
            with torch.no_grad():
                out = model.eval()(torch.zeros(1, *shape))
        except Exception as exc:
            raise ZooError(f"{self.name} built for {format_shape(shape)} images does not run on them "
                           f"({describe(exc)}); its builder must honour input_shape") from exc  # fmt: skip
        finally:
            model.train(training)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, classes):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ZooError(f"{self.name} built for {classes} classes gives {got} for one image, not (1, {classes}); "
                           f"its builder must size the last layer from num_classes")  # fmt: skip
        return model  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Dataset(_Registered):
    """An image classification data set with fixed train and test splits."""

    name: str
    """Lower-case letters, digits and ``_``, starting with a letter; unique among data sets."""
    loader: Loader
    """Called as ``loader(split, root, download)``; returns uint8 images N×C×H×W and int64 labels."""
    summary: str
    """One line, shown by ``zoo list`` and ``zoo info``."""
    classes: tuple[str, ...]
    """Two or more distinct class names, in label order."""
    shape: Shape
    """(C, H, W) of every image the loader returns."""
    mean: tuple[float, ...]
    """Per-channel mean of the training pixels scaled to [0, 1]."""
    std: tuple[float, ...]
    """Per-channel standard deviation of the training pixels scaled to [0, 1]."""
    train_size: int
    """Images in the train split the loader returns."""
    test_size: int
    """Images in the test split the loader returns (``zoo check`` compares it)."""
    aliases: tuple[str, ...] = ()
    """Other names users may type; the same rules as ``name``."""
    source: str = ""
    """Where the data comes from (a URL, a paper), shown by ``zoo info``."""
    downloads: bool = True
    """True where the files live in the data directory (``--data-dir``), whether the loader downloads them or the
    user puts them there: ``zoo info`` then shows that directory. False for data generated in memory."""
    location: str = ""
    """For a folder of images: its path, by which zoo finds the data set again (runs, checkpoints)."""

    @property
    def ref(self) -> str:
        """What to store to find this data set again: its folder, or its registered name."""
        return self.location or self.name

    kind: ClassVar[str] = "data set"
    references: ClassVar[tuple[str, ...]] = ("loader",)

    def validate(self) -> None:
        super().validate()
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise ValueError(f"shape must be (channels, height, width), got {self.shape}")
        if len(self.mean) != self.shape[0] or len(self.std) != self.shape[0]:
            raise ValueError(f"mean and std need one value per channel ({self.shape[0]})")
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise ValueError("classes must be two or more distinct names")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def load(self, split: Split, root: Path, download: bool = True) -> tuple[Tensor, Tensor]:
        """One split as ``(uint8 images N×C×H×W, int64 labels N)``, checked against the metadata."""
        images, labels = self.resolve("loader")(split, root, download)
        expected = (len(labels), *self.shape)
        if tuple(images.shape) != expected or str(images.dtype) != "torch.uint8":
            raise ZooError(
                f"data set {self.name}'s loader returned {images.dtype} images of shape {tuple(images.shape)}, "
                f"expected torch.uint8 {expected}; fix the loader or the declared shape"
            )
        if labels.ndim != 1 or labels.dtype.is_floating_point or labels.dtype.is_complex:
            raise ZooError(f"data set {self.name}'s {split} labels are {labels.dtype} of shape {tuple(labels.shape)}; "
                           f"they must be integer class indices, one per image")  # fmt: skip
        if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < self.num_classes:
            bad = int(labels.min()) if int(labels.min()) < 0 else int(labels.max())
            raise ZooError(f"data set {self.name}'s {split} split has label {bad}, outside 0..{self.num_classes - 1} "
                           f"({self.num_classes} classes); fix the files or the loader")  # fmt: skip
        return images, labels.long()


@dataclass(frozen=True)
class Exporter(_Registered):
    """An export format: how to write a model to a file, and how to run that file to prove it.

    ``writer(model, example, meta, path, opset)`` writes the eval-mode ``model`` (``example``
    is a float input batch: real training images when an approximate format is written, its calibration
    data) to ``path`` with ``meta`` stored inside the file.
    ``runner(path)`` loads the file with the format's own runtime and returns
    ``(run, meta)``: ``run`` maps a float32 numpy batch N×C×H×W to numpy scores.
    ``reader(path)``, if given, returns ``meta`` alone, read from the file as data without running anything in it
    (``zoo info FILE``); without one, ``zoo info`` loads the file with ``runner``.
    """

    name: str
    """Lower-case letters, digits and ``_``; ``zoo export ARCH --format NAME`` writes the format."""
    suffix: str
    """The file suffix, such as ``.onnx``: lower case, starting with a dot. The longest suffix that ends a
    file's name decides which runner opens it."""
    writer: Writer
    """A callable or ``"module:attribute"`` string: ``writer(model, example, meta, path, opset)``."""
    runner: Runner
    """A callable or ``"module:attribute"`` string: ``runner(path)`` returns ``(run, meta)``."""
    summary: str
    """One line, shown by ``zoo list`` and ``zoo info NAME``."""
    aliases: tuple[str, ...] = ()
    """Other names users may type; the same rules as ``name``."""
    proof: Literal["exact", "float32", "approximate"] = "float32"
    """How a file is proved: ``exact`` outputs bit-identical to the model's; ``float32`` within float32 rounding
    (``zoo export --ulps``) on real and random inputs; ``approximate`` (int8, float16) judged on the test split's
    real images by top-1 agreement with the model and the change in accuracy."""
    min_agreement: float = 0.995
    """``approximate``: the least share of test images whose top class must match the model's."""
    max_accuracy_drop: float = 0.003
    """``approximate``: how much test accuracy (a fraction: 0.003 is 0.3 points) the file may lose."""
    reader: Reader | None = None
    """Optional: a callable or ``"module:attribute"`` string, ``reader(path)`` returning ``meta``."""
    precision: str = "float32"
    """What the file's numbers are: ``float32``, ``float16`` (weights; computed in float32) or ``int8``."""
    trains: bool = False
    """Writing a file trains (fine-tunes a copy of the model): minutes, not seconds, so it is written only when
    named, never by ``zoo export --all``."""
    calibration_images: int = 256
    """``approximate``: how many training images the writer is handed as ``example``, to calibrate or tune on."""
    min_opset: int = 0
    """The lowest ONNX opset the format is written at: a lower ``--opset`` is raised to it for its file."""
    notice: str = ""
    """Said once to the user when the format is written (a deprecation, say)."""
    runs_code: bool = False
    """Loading a file of this format can run code the file carries (pickle, TorchScript, torch.export):
    zoo loads such a file only when the user trusts it (``--trust``, ``trust=True``)."""

    kind: ClassVar[str] = "export format"
    references: ClassVar[tuple[str, ...]] = ("writer", "runner")

    def validate(self) -> None:
        super().validate()
        if not re.fullmatch(r"\.[a-z0-9][a-z0-9_.]*", self.suffix):
            raise ValueError(f"suffix must be a file suffix such as '.onnx', got {self.suffix!r}")
        if self.proof not in ("exact", "float32", "approximate"):
            raise ValueError(f"proof must be 'exact', 'float32' or 'approximate', got {self.proof!r}")
        if not (0 < self.min_agreement <= 1 and 0 <= self.max_accuracy_drop < 1):
            raise ValueError("min_agreement must be in (0, 1] and max_accuracy_drop in [0, 1)")
        if self.reader is not None and not (callable(self.reader) or _REFERENCE.fullmatch(str(self.reader))):
            raise ValueError(f"reader must be a callable or a 'package.module:attribute' string, got {self.reader!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.precision != "float32" and self.proof != "approximate":
            raise ValueError(f"a {self.precision} format is approximate: give it proof='approximate'")
        if (
            isinstance(self.calibration_images, bool)
            or not isinstance(self.calibration_images, int)
            or not (1 <= self.calibration_images <= MAX_CALIBRATION_IMAGES)
        ):
            raise ValueError(f"calibration_images must be from 1 to {MAX_CALIBRATION_IMAGES}, "
                             f"got {self.calibration_images!r}")  # fmt: skip
        if isinstance(self.min_opset, bool) or not isinstance(self.min_opset, int) or not 0 <= self.min_opset <= 100:
            raise ValueError(f"min_opset must be an ONNX opset (0 for none), got {self.min_opset!r}")

    def describe_proof(self, ulps: float = DEFAULT_ULPS) -> str:
        """What a file of this format must show, in words."""
        if self.proof == "exact":
            return "outputs bit-identical to the model's"
        if self.proof == "float32":
            return f"outputs within {ulps:g} float32 rounding steps of the model's"
        return (f"on the test split, the model's top class on at least {self.min_agreement:.1%} of images and "
                f"at most {self.max_accuracy_drop * 100:g} points of accuracy lost")  # fmt: skip

    def write(self, model: nn.Module, example: Tensor, meta: dict[str, Any], path: Path, opset: int) -> None:
        self.resolve("writer")(model, example, meta, path, opset)

    def load(self, path: Path) -> tuple[Callable[[Any], Any], dict[str, Any]]:
        return self.resolve("runner")(path)  # type: ignore[no-any-return]

    def read_metadata(self, path: Path) -> dict[str, Any]:
        """The file's metadata: from ``reader`` where the format has one, else from loading it with ``runner``."""
        if self.reader is None:
            return self.load(path)[1]
        return self.resolve("reader")(path)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Runtime(_Registered):
    """A runtime for export formats' files, beside each format's own ``runner``: onnxruntime, OpenVINO, PyTorch.

    ``loader(path, precision, threads)`` loads the file at ``path`` and returns ``run``, a function from a float32
    numpy batch N×C×H×W to numpy scores N×classes, computing in ``precision`` on ``threads`` threads.
    ``precision`` is one of ``precisions`` for a float32 or float16 file, and ``"int8"`` for an int8 file. The
    loader sets the precision explicitly, never leaving it to the runtime's own default, and raises
    ``zoo.ZooError`` saying why where it cannot honour it. zoo proves every (file, runtime, precision) against
    the format's own runner before it uses one (``zoo.runtimes.load_runner``).
    """

    name: str
    """Lower-case letters, digits and ``_``; ``--runtime NAME[:PRECISION]`` chooses it."""
    formats: tuple[str, ...]
    """The export formats whose files it runs, by their registered names (``"safetensors"``: zoo's checkpoints,
    runs and published weights)."""
    loader: RuntimeLoader
    """A callable or ``"module:attribute"`` string: ``loader(path, precision, threads)`` returns ``run``."""
    summary: str
    """One line, shown by ``zoo list`` and ``zoo info NAME``."""
    precisions: tuple[str, ...] = ("float32",)
    """What it can compute a float32 file in (``float32``, ``bfloat16``, ``float16``); the first is its default."""
    aliases: tuple[str, ...] = ()
    """Other names users may type; the same rules as ``name``."""
    source: str = ""
    """Where the runtime comes from (its project's URL), shown by ``zoo info``."""

    kind: ClassVar[str] = "runtime"
    references: ClassVar[tuple[str, ...]] = ("loader",)

    def validate(self) -> None:
        super().validate()
        if not self.formats or not all(isinstance(f, str) and _NAME.fullmatch(f) for f in self.formats):
            raise ValueError(f"formats must name one or more export formats, got {self.formats!r}")
        if not self.precisions or not set(self.precisions) <= set(PRECISIONS) - {"int8"}:
            raise ValueError(f"precisions must be some of float32, bfloat16, float16, got {self.precisions!r}")

    def load(self, path: Path, precision: str, threads: int) -> Callable[[Any], Any]:
        return self.resolve("loader")(path, precision, threads)  # type: ignore[no-any-return]


@dataclass(frozen=True, kw_only=True)
class Weights:
    """Published trained weights for an architecture: a verified file, and what was measured with it.

    Named ``ARCH:TAG`` (``mnist_cnn32:mnist``).  The file is package data of the providing
    distribution (``file="package:path/in/it.safetensors"``), or a download (``url=``) that zoo
    keeps in its cache directory; either way its ``sha256`` is checked before every use.
    """

    architecture: str
    """The registered architecture the weights are for; weights of an unknown one are dropped with a warning."""
    tag: str
    """Usually the data set the weights were trained on."""
    sha256: str
    """The file's SHA-256, 64 lower-case hex digits, checked before every use."""
    size: int
    """The file's length in bytes; a download is cut off beyond it."""
    file: str = ""
    """Package data: ``"package:path/in/it.safetensors"``. Give ``file`` or ``url``, not both."""
    url: str = ""
    """An http(s) download, kept in zoo's cache directory (``$ZOO_CACHE_DIR``) once its sha256 matches."""
    dataset: str
    """The data set the weights were trained and scored on."""
    classes: tuple[str, ...]
    """The class names, in the order of the model's outputs."""
    input_shape: Shape
    """(C, H, W) of the images the model takes."""
    mean: tuple[float, ...]
    """Per-channel normalisation mean the model was trained with."""
    std: tuple[float, ...]
    """Per-channel normalisation standard deviation the model was trained with."""
    accuracy: float
    """Top-1 accuracy on the data set's test split, as ``zoo eval ARCH:TAG`` measures it."""
    loss: float
    """Mean cross-entropy on the test split."""
    params: int
    """Trainable parameters."""
    macs: int
    """Multiply-accumulates per image."""
    command: str = ""
    """The ``zoo train`` command that produced the file, every setting spelt out."""
    seed: int = 0
    """The training seed."""
    recipe: str = ""
    """The training settings in words (``zoo.Recipe.describe``)."""
    train_seconds: float = 0.0
    """Wall-clock training time."""
    machine: str = ""
    """Where it was trained (CPU model and vector features, threads): that machine reproduces it bit for bit."""
    zoo_version: str = ""
    """The zoo version that trained them."""
    torch_version: str = ""
    """The PyTorch version that trained them."""
    default: bool = False
    """The architecture's default weights (otherwise its first registered ones are)."""
    notes: str = ""
    """Anything else: what a recipe changed, why a goal was missed."""

    aliases: ClassVar[tuple[str, ...]] = ()

    @property
    def name(self) -> str:
        return f"{self.architecture}:{self.tag}"

    def validate(self) -> None:
        """Raise ValueError naming what is wrong; the registry turns down weights that fail."""
        check_name("architecture", self.architecture, ())
        check_name("weights tag", self.tag, ())
        if not _SHA256.fullmatch(self.sha256):
            raise ValueError(f"weights {self.name}: sha256 must be 64 lower-case hex digits, got {self.sha256!r}")
        if bool(self.file) == bool(self.url):
            raise ValueError(f"weights {self.name}: give file= (package data) or url=, exactly one of them")
        if self.file and not re.fullmatch(r"[A-Za-z_][\w.]*:[\w.\-/]+", self.file):
            raise ValueError(f"weights {self.name}: file must be 'package:path/in/it', got {self.file!r}")
        if self.url and not self.url.startswith(("https://", "http://")):
            raise ValueError(f"weights {self.name}: url must be http(s), got {self.url!r}")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or not 0 < self.size <= MAX_WEIGHTS_BYTES:
            raise ValueError(f"weights {self.name}: size must be 1 to {MAX_WEIGHTS_BYTES:,} bytes, got {self.size}")
        if not 0 <= self.accuracy <= 1:
            raise ValueError(f"weights {self.name}: accuracy is a fraction in [0, 1], got {self.accuracy}")
        if len(self.input_shape) != 3 or len(self.mean) != self.input_shape[0] or len(self.std) != len(self.mean):
            raise ValueError(f"weights {self.name}: input_shape is (C, H, W), with C values in mean and std")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], **changes: Any) -> Weights:
        """A record from ``to_json``'s dict (lists become tuples), with ``changes`` applied."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ValueError(f"unknown weights field(s) {', '.join(unknown)}")
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in {**data, **changes}.items()}
        weights = cls(**values)
        weights.validate()
        return weights

    def transforms(self, invert: bool | None = None) -> Callable[[Any], Tensor]:
        """What images go through before the model: a torchvision transform from a PIL image or uint8 tensor
        to the normalised float tensor, as ``torchvision`` weights' ``transforms()``.

        Grey images are turned the training data's way round as ``zoo predict`` turns them: ``invert=None``
        inverts one whose background is the opposite of the training images' (dark ink on white paper for an
        MNIST model); True or False forces it."""
        import torch
        from torchvision.transforms import v2

        c, h, w = self.input_shape
        colour = v2.Grayscale(1) if c == 1 else v2.RGB()
        scale = v2.ToDtype(torch.float32, scale=True)
        steps: list[Any] = [v2.ToImage(), colour, _Resize((h, w)),
                            _Polarity(self.mean, check_invert(invert)), scale,
                            v2.Normalize(list(self.mean), list(self.std))]  # fmt: skip
        return v2.Compose(steps)  # type: ignore[no-any-return]


class _Resize:
    """A transform step: a uint8 image resized as ``zoo predict`` resizes image files (``zoo.images.resize``)."""

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = size

    def __call__(self, image: Tensor) -> Tensor:
        import numpy as np
        import torch
        from PIL import Image
        from torchvision import tv_tensors

        pixels = image.numpy()  # C×H×W
        if pixels.shape[1:] == self.size:
            return image
        resized = np.array(resize(Image.fromarray(pixels[0] if len(pixels) == 1 else pixels.transpose(1, 2, 0)),
                                    self.size))  # fmt: skip
        chw = resized[None] if resized.ndim == 2 else resized.transpose(2, 0, 1)
        return tv_tensors.wrap(torch.from_numpy(np.ascontiguousarray(chw)), like=image)  # type: ignore[no-any-return]


class _Polarity:
    """A transform step: a uint8 image inverted when ``zoo.polarity.should_invert`` says so (a class, not a
    closure, so that a DataLoader's worker processes can take it)."""

    def __init__(self, mean: Sequence[float], invert: bool | None) -> None:
        self.mean, self.invert = tuple(mean), invert

    def __call__(self, image: Tensor) -> Tensor:
        import torch
        from torchvision import tv_tensors

        if should_invert(image.numpy(), self.mean, self.invert):
            return tv_tensors.wrap(255 - image.as_subclass(torch.Tensor), like=image)  # type: ignore[no-any-return]
        return image


@dataclass
class Plugin:
    """One entry point in the ``zoo`` group and what became of loading it."""

    name: str
    distribution: str
    version: str
    module: str
    builtin: bool = False
    status: Literal["loaded", "failed", "disabled"] = "loaded"
    location: str = ""
    error: str = ""
    provides: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.distribution} {self.version}"


Item = Architecture | Dataset | Exporter | Runtime | Weights
Registrable: TypeAlias = "Item | click.Command"


def _aliases(item: Registrable) -> tuple[str, ...]:
    return getattr(item, "aliases", ())  # commands have none


def _validate(item: Registrable) -> None:
    if isinstance(item, (_Registered, Weights)):
        item.validate()
    elif not _COMMAND.fullmatch(item.name or ""):
        raise ValueError(
            f"command name {item.name!r} must be lower case letters, digits and '-', starting with a letter"
        )


class Registry:
    """Architectures, data sets, export formats, runtimes, weights and commands by name, each with the plugin that
    provided it."""

    def __init__(self) -> None:
        self.architectures: dict[str, Architecture] = {}
        self.datasets: dict[str, Dataset] = {}
        self.exporters: dict[str, Exporter] = {}
        self.runtimes: dict[str, Runtime] = {}
        self.weights: dict[str, Weights] = {}
        """By ``ARCH:TAG``, in registration order."""
        self.commands: dict[str, click.Command] = {}
        """``zoo`` subcommands from plugins."""
        self.plugins: list[Plugin] = []
        self._providers: dict[tuple[str, str], Plugin] = {}
        self._owners: dict[str, dict[str, str]] = {}
        """Per kind, each normalised name and alias taken, and the name that holds it: one lookup per registration,
        so that registering n items costs n, not n²."""

    def _table(self, item: Registrable) -> tuple[str, dict[str, Any]]:
        if isinstance(item, Architecture):
            return "architecture", self.architectures
        if isinstance(item, Exporter):
            return "export format", self.exporters
        if isinstance(item, Runtime):
            return "runtime", self.runtimes
        if isinstance(item, Weights):
            return "weights", self.weights
        if isinstance(item, Dataset):
            return "data set", self.datasets
        return "command", self.commands

    def add(self, item: Registrable, plugin: Plugin) -> None:
        """Register ``item``; one that fails its checks is turned down, and a name or alias that is already taken
        is kept by its first owner (each with a warning)."""
        kind, table = self._table(item)
        name, aliases = str(item.name), _aliases(item)
        try:
            _validate(item)
        except ValueError as exc:
            self._conflict(plugin, f"{kind} {name!r} from {plugin.label} is turned down: {exc}", "fix it")
            return
        owners = self._owners.setdefault(kind, {})
        if normalize(name) in owners:
            other = self._providers[(kind, owners[normalize(name)])]
            self._conflict(plugin, f"{kind} {name!r} from {plugin.label} is ignored: {other.label} already provides it")
            return
        taken = [a for a in aliases if normalize(a) in owners]
        for alias in taken:
            other = self._providers[(kind, owners[normalize(alias)])]
            self._conflict(
                plugin,
                f"alias {alias!r} of {kind} {name} from {plugin.label} is ignored: {other.label} already uses it",
            )
        if taken and isinstance(item, _Registered):
            item = dataclasses.replace(item, aliases=tuple(a for a in aliases if a not in taken))
        if isinstance(item, _Registered):
            object.__setattr__(item, "provided_by", plugin.label)  # frozen, but not yet shared
        table[name] = item
        owners.update((normalize(s), name) for s in (name, *_aliases(item)))
        self._providers[(kind, name)] = plugin
        plugin.provides.append(f"{kind} {name}")

    def _conflict(self, plugin: Plugin, message: str, fix: str = "rename it in the plugin") -> None:
        plugin.conflicts.append(message)
        warnings.warn(f"{message}; {fix}", PluginWarning, stacklevel=3)

    def remove(self, item: Registrable, reason: str, fix: str) -> None:
        """Take back what a plugin registered, with a warning saying why and how to fix it."""
        kind, table = self._table(item)
        name = str(item.name)
        owners = self._owners[kind]
        for spelling in map(normalize, (name, *_aliases(table.pop(name)))):
            if owners.get(spelling) == name:
                del owners[spelling]
        plugin = self._providers.pop((kind, name))
        plugin.provides.remove(f"{kind} {name}")
        self._conflict(plugin, f"{kind} {name} from {plugin.label} {reason}", fix)

    def provider(self, item: Item) -> Plugin:
        kind, _ = self._table(item)
        return self._providers[(kind, item.name)]

    def architecture(self, name: str) -> Architecture:
        """The architecture ``name`` (a name, alias or unique short name) stands for."""
        return self.architectures[resolve(name, _spellings(self.architectures), "architecture")]

    def dataset(self, name: str) -> Dataset:
        """The data set ``name`` (a name, alias or unique short name) stands for."""
        return self.datasets[resolve(name, _spellings(self.datasets), "data set")]

    def exporter(self, name: str) -> Exporter:
        """The export format ``name`` stands for."""
        return self.exporters[resolve(name, _spellings(self.exporters), "export format")]

    def runtime(self, name: str) -> Runtime:
        """The runtime ``name`` stands for."""
        return self.runtimes[resolve(name, _spellings(self.runtimes), "runtime")]

    def weights_of(self, architecture: str) -> list[Weights]:
        """The weights registered for the architecture named exactly ``architecture``, in registration order."""
        return [w for w in self.weights.values() if w.architecture == architecture]

    def find_weights(self, architecture: str, tag: str | None = None) -> Weights:
        """The weights ``tag`` of ``architecture`` (any name that resolves to it); without a tag, its default ones."""
        arch = self.architecture(architecture)
        published = self.weights_of(arch.name)
        if not published:
            raise ZooError(f"{arch.name} has no published weights (`zoo weights` lists them); "
                           f"train it with `zoo train {arch.name} DATASET`")  # fmt: skip
        if tag is None:
            return next((w for w in published if w.default), published[0])
        for w in published:
            if normalize(w.tag) == normalize(tag):
                return w
        close = difflib.get_close_matches(normalize(tag), [normalize(w.tag) for w in published], n=1, cutoff=0.6)
        hint = f"did you mean {arch.name}:{close[0]}? " if close else ""
        raise UnknownName(f"{arch.name} has no weights tagged {tag!r}; {hint}"
                          f"it has {', '.join(w.name for w in published)} (see `zoo weights {arch.name}`)")  # fmt: skip

    def lookup(self, name: str) -> Architecture | Dataset | Exporter | Runtime:
        """An architecture, a data set, an export format or a runtime, whichever ``name`` stands for (in that
        order when two kinds share a name)."""
        tables: Mapping[str, Architecture | Dataset | Exporter | Runtime] = {
            **self.runtimes, **self.exporters, **self.datasets, **self.architectures}  # fmt: skip
        return tables[resolve(name, _spellings(tables))]


def _spellings(table: Mapping[str, Item]) -> dict[str, tuple[str, ...]]:
    return {name: item.aliases for name, item in table.items()}
