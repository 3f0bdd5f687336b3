"""`zoo new-plugin`: a working plugin package to start from: an architecture, a data set, weights, a command, a
test."""

from __future__ import annotations

import re
from pathlib import Path

from zoo.errors import ZooError

__all__ = ["new_plugin"]

PYPROJECT = """\
[build-system]
requires = ["setuptools>=70"]
build-backend = "setuptools.build_meta"

[project]
name = "zoo-{name}"
version = "0.1.0"
description = "A zoo plugin: the {name}_net architecture and the {name}_blobs data set"
requires-python = ">=3.10"
dependencies = ["zoo-classifiers"]

[project.optional-dependencies]
test = ["pytest"]

# zoo finds plugins through this entry-point group.
[project.entry-points.zoo]
{name} = "zoo_{name}"

[tool.setuptools]
packages = ["zoo_{name}"]

# Published weights ship inside the package: `zoo publish` writes each file and its record into weights/.
[tool.setuptools.package-data]
zoo_{name} = ["weights/*.safetensors", "weights/*.json"]
"""

PLUGIN = '''\
"""zoo plugin {name}: the {name}_net architecture, the {name}_blobs data set, their weights, a command."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

import zoo
from zoo.weights import packaged

CLASSES = ("top left", "top right", "bottom left", "bottom right")


def load_blobs(split: str, root: Path, download: bool):
    """A bright blob in one of four quadrants; the class is the quadrant. Generated, so nothing to download."""
    import torch

    g = torch.Generator().manual_seed(0 if split == "train" else 1)
    n = 4000 if split == "train" else 800
    labels = torch.randint(0, 4, (n,), generator=g)
    centre = torch.stack([labels // 2, labels % 2], 1) * 14 + 7 + torch.randint(-3, 4, (n, 2), generator=g)
    grid = torch.arange(28).float()
    dy = grid.view(1, 28, 1) - centre[:, 0].view(n, 1, 1)
    dx = grid.view(1, 1, 28) - centre[:, 1].view(n, 1, 1)
    blob = torch.exp(-(dx**2 + dy**2) / 18) + 0.2 * torch.rand(n, 28, 28, generator=g)
    return (blob.clamp(0, 1) * 255).round().to(torch.uint8).unsqueeze(1), labels


@zoo.hookimpl
def register_architectures(register: Callable[[zoo.Architecture], None]) -> None:
    # A "module:attribute" builder keeps `import torch` out of `zoo list`.
    register(zoo.Architecture(name="{name}_net", builder="zoo_{name}.model:Net", summary="a small CNN"))


@zoo.hookimpl
def register_datasets(register: Callable[[zoo.Dataset], None]) -> None:
    register(
        zoo.Dataset(
            name="{name}_blobs",
            loader=load_blobs,
            summary="a blob in one of four quadrants",
            classes=CLASSES,
            shape=(1, 28, 28),
            mean=(0.2,),
            std=(0.25,),
            train_size=4000,
            test_size=800,
            downloads=False,
        )
    )


@zoo.hookimpl
def register_weights(register: Callable[[zoo.Weights], None]) -> None:
    # The weights `zoo publish RUN --out zoo_{name}/weights` wrote: each file with its record (sha256, accuracy).
    for weights in packaged(__package__):
        register(weights)


@click.command("{name}-samples")
@click.option("--count", default=8, show_default=True, help="How many test images to save.")
@click.option("--out", type=click.Path(file_okay=False), default="{name}-samples", show_default=True)
def samples(count: int, out: str) -> None:
    """Save test images of {name}_blobs as PNG files named by their class."""
    from PIL import Image

    images, labels = load_blobs("test", Path(out), False)
    Path(out).mkdir(parents=True, exist_ok=True)
    for i in range(min(count, len(labels))):
        name = str(i) + "-" + CLASSES[int(labels[i])].replace(" ", "_") + ".png"
        Image.fromarray(images[i, 0].numpy()).save(Path(out) / name)
    click.echo("wrote " + str(min(count, len(labels))) + " images to " + out)


@zoo.hookimpl
def register_commands(register: Callable[[click.Command], None]) -> None:
    # `zoo {name}-samples`: errors it raises are reported as zoo's own are.
    register(samples)
'''

MODEL = '''\
"""The {name}_net architecture: it adapts to any input shape and class count."""

from __future__ import annotations

import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, input_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(input_shape[0], 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        with torch.no_grad():  # the width of the linear layer follows from the input shape
            flat = self.features(torch.zeros(1, *input_shape)).numel()
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(flat, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
'''

TEST = '''\
"""zoo's conformance kit, one test per check: metadata, shapes, gradients, learning, parity of every export format."""

import pytest

from zoo import testing


@pytest.mark.parametrize("case", testing.cases("zoo-{name}"), ids=str)
def test_conforms(case: testing.Case) -> None:
    case.assert_passes()
'''

README = """\
# zoo-{name}

A plugin for [zoo](https://pypi.org/project/zoo-classifiers/): the `{name}_net` architecture, the
`{name}_blobs` data set, weights trained on it once you publish them, and a `zoo {name}-samples` command.

```bash
pip install -e '.[test]'      # zoo finds the plugin through its `zoo` entry point
zoo list '{name}*'
zoo train {name}_net {name}_blobs --epochs 2 --out runs/first
zoo publish runs/first --tag blobs --out zoo_{name}/weights   # weights {name}_net:blobs, shipped in the package
zoo {name}-samples             # the plugin's own command: test images as PNG files
zoo predict {name}_net:blobs {name}-samples/0-*.png
zoo check zoo-{name} --strict  # the conformance kit: the weights' file, record and accuracy included
pytest                         # the same kit, from the tests
```
"""


def new_plugin(name: str, directory: str | Path | None = None) -> Path:
    """Write the package ``zoo-NAME`` into ``directory`` (default: ``./zoo-NAME``), which must not exist yet."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ZooError(f"plugin name {name!r} must be lower case letters, digits and '_', starting with a letter")
    root = Path(directory) if directory else Path(f"zoo-{name}")
    if root.exists():
        raise ZooError(f"{root} already exists; choose another --dir")
    files = {
        "pyproject.toml": PYPROJECT,
        f"zoo_{name}/__init__.py": PLUGIN,
        f"zoo_{name}/model.py": MODEL,
        "tests/test_plugin.py": TEST,
        "README.md": README,
    }
    try:
        for path, template in files.items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_text(template.format(name=name))
    except OSError as exc:
        raise ZooError(f"cannot write {root} ({exc.strerror}); pass --dir DIR") from exc
    return root
