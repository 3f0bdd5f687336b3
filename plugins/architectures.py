"""Built-in plugin: the four tutorial architectures and their training recipes."""

from __future__ import annotations

from collections.abc import Callable

import zoo
from zoo import Architecture, Recipe


@zoo.hookimpl
def register_architectures(register: Callable[[Architecture], None]) -> None:
    register(
        Architecture(
            name="mnist_cnn32",
            aliases=("cnn32",),
            builder="zoo.plugins.nets:MnistCNN32",
            summary="two conv blocks (32, 64 channels), two linear layers",
            source="PyTorch MNIST CNN tutorial notebook (conv 32/64, Linear 128)",
            input_shape=(1, 28, 28),
            default_recipe=Recipe(
                optimizer="adamw",
                lr=3e-3,
                batch_size=256,
                epochs=5,
                schedule="onecycle",
                warmup=0.1,
                weight_decay=5e-4,
                val_split=0.1,
                dataset="mnist",
                augment="crop",
            ),
            tutorial_recipe=Recipe(
                optimizer="adam",
                lr=1e-3,
                batch_size=10,
                epochs=5,
                schedule="constant",
                val_split=0.2,
                seed=42,
                dataset="mnist",
                notes="loaders seeded 143; keeps the best state by validation accuracy",
            ),
            notes="the tutorial applied softmax twice (in forward and in CrossEntropyLoss); zoo returns logits",
        )
    )
    register(
        Architecture(
            name="mnist_cnn6_16",
            aliases=("cnn6", "cnn6_16"),
            builder="zoo.plugins.nets:MnistCNN6_16",
            summary="LeNet-like: 3x3 convs (6, 16 channels), three linear layers",
            source="PyTorch MNIST CNN tutorial notebook (conv 6/16, Linear 120/84)",
            input_shape=(1, 28, 28),
            default_recipe=Recipe(
                optimizer="adamw",
                lr=8e-3,
                batch_size=256,
                epochs=5,
                schedule="onecycle",
                weight_decay=5e-4,
                val_split=0.1,
                dataset="mnist",
            ),
            tutorial_recipe=Recipe(
                optimizer="adam",
                lr=1e-3,
                batch_size=10,
                epochs=5,
                schedule="constant",
                val_split=0.0,
                seed=42,
                dataset="mnist",
            ),
            notes="outputs log-probabilities, as in the tutorial",
        )
    )
    register(
        Architecture(
            name="lenet_bn",
            aliases=("lenet", "lenet5"),
            builder="zoo.plugins.nets:LeNetBN",
            summary="LeNet-5 with batch normalisation, sigmoid activations",
            source="LeNet-5 with batch normalisation tutorial notebook (FashionMNIST)",
            input_shape=(1, 28, 28),
            default_recipe=Recipe(
                optimizer="adamw",
                lr=5e-3,
                batch_size=128,
                epochs=10,
                schedule="onecycle",
                weight_decay=5e-4,
                val_split=0.1,
                dataset="fashionmnist",
            ),
            tutorial_recipe=Recipe(
                optimizer="adam",
                lr=0.1,
                batch_size=100,
                epochs=5,
                schedule="constant",
                val_split=1 / 6,
                seed=3,
                dataset="fashionmnist",
                notes="50,000 / 10,000 train/validation split",
            ),
        )
    )
    register(
        Architecture(
            name="cifar_seq",
            aliases=("cifar",),
            builder="zoo.plugins.nets:CifarSeq",
            summary="nn.Sequential of four 'same' 3x3 convs (32 channels), 512 hidden units",
            source="Keras-style nn.Sequential CIFAR-10 tutorial notebook",
            input_shape=(3, 32, 32),
            default_recipe=Recipe(
                optimizer="adamw",
                lr=2e-3,
                batch_size=128,
                epochs=20,
                schedule="onecycle",
                weight_decay=5e-4,
                val_split=0.1,
                dataset="cifar10",
                augment="crop_flip",
            ),
            tutorial_recipe=Recipe(
                optimizer="adam",
                lr=0.01,
                batch_size=256,
                epochs=30,
                schedule="constant",
                val_split=0.0,
                dataset="cifar10",
                limit=2000,
                notes="a random 2,000-image subset of the training split",
            ),
            notes="the notebook's prose lists three conv blocks; its code, with four, is what ran",
        )
    )
