"""An example zoo plugin: one architecture (a tiny MLP), one data set (generated stripes) and a command."""

from __future__ import annotations

from collections.abc import Callable

import click

import zoo

CLASSES = ("horizontal", "vertical")


def load_stripes(split: str, root: object, download: bool) -> tuple[object, object]:
    """Horizontal or vertical stripes of random period and phase, with noise; the same for the same split."""
    import torch

    g = torch.Generator().manual_seed(0 if split == "train" else 1)
    n = 2000 if split == "train" else 400
    labels = torch.randint(0, 2, (n,), generator=g)
    period = torch.randint(3, 8, (n, 1, 1), generator=g)
    phase = torch.randint(0, 8, (n, 1, 1), generator=g)
    coords = torch.arange(28)
    rows = ((coords.view(1, 28, 1) + phase) // period) % 2
    cols = ((coords.view(1, 1, 28) + phase) // period) % 2
    pattern = torch.where(labels.view(n, 1, 1) == 0, rows.expand(n, 28, 28), cols.expand(n, 28, 28)).float()
    noisy = (pattern * 0.8 + 0.2 * torch.rand(n, 28, 28, generator=g)).clamp(0, 1)
    return (noisy * 255).round().to(torch.uint8).unsqueeze(1), labels


@zoo.hookimpl
def register_architectures(register: Callable[[zoo.Architecture], None]) -> None:
    register(
        zoo.Architecture(name="tiny_mlp", builder="zoo_example_mlp.model:TinyMLP", summary="one hidden layer of 64")
    )


@zoo.hookimpl
def register_datasets(register: Callable[[zoo.Dataset], None]) -> None:
    register(zoo.Dataset(
        name="stripes", loader=load_stripes, summary="horizontal or vertical stripes",
        classes=CLASSES, shape=(1, 28, 28), mean=(0.5,), std=(0.4,),
        train_size=2000, test_size=400, downloads=False,
    ))  # fmt: skip


@click.command("stripes")
@click.argument("split", type=click.Choice(["train", "test"]), default="test")
def stripes_command(split: str) -> None:
    """Count the stripes data set's images per class."""
    _, labels = load_stripes(split, None, False)
    for index, name in enumerate(CLASSES):
        click.echo(f"{name}: {int((labels == index).sum())}")


@zoo.hookimpl
def register_commands(register: Callable[[click.Command], None]) -> None:
    register(stripes_command)
