"""The built-in architectures: layers and parameter counts as the tutorials had them, and any data set's shape."""

from __future__ import annotations

import pytest
import torch

from zoo.errors import ZooError
from zoo.loader import load_registry
from zoo.summary import count_parameters, summarize

REGISTRY = load_registry()
ARCHS = sorted(REGISTRY.architectures)
DATASETS = sorted(REGISTRY.datasets)

# Trainable parameters on each architecture's own input (REFERENCE: the contract for the built-ins).
PARAMETERS = {"mnist_cnn32": 421_642, "mnist_cnn6_16": 60_074, "lenet_bn": 62_158, "cifar_seq": 296_426}


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_parameter_counts_match_the_tutorials(name: str) -> None:
    assert count_parameters(REGISTRY.architectures[name].build()) == PARAMETERS[name]


def test_lenet_bn_batch_norm_buffers() -> None:
    model = REGISTRY.architectures["lenet_bn"].build()
    assert sum(b.numel() for b in model.buffers()) == 456


def test_mnist_cnn6_16_per_tensor_counts() -> None:
    layers = summarize(REGISTRY.architectures["mnist_cnn6_16"].build(), (1, 28, 28))
    tensors = [t for layer in layers for t in layer.tensors]
    assert tensors == [54, 6, 864, 16, 48000, 120, 10080, 84, 840, 10]


@pytest.mark.parametrize(
    ("name", "kinds"),
    [
        ("mnist_cnn32", "Conv2d ReLU MaxPool2d Conv2d ReLU MaxPool2d Flatten Linear Linear"),
        (
            "mnist_cnn6_16",
            "Conv2d ReLU MaxPool2d Conv2d ReLU MaxPool2d Flatten Linear ReLU Linear ReLU Linear LogSoftmax",
        ),
        (
            "lenet_bn",
            "Conv2d BatchNorm2d Sigmoid AvgPool2d Dropout Conv2d BatchNorm2d Sigmoid AvgPool2d Flatten Dropout "
            "Linear BatchNorm1d Sigmoid Dropout Linear BatchNorm1d Sigmoid Dropout Linear",
        ),
        (
            "cifar_seq",
            "Conv2d ReLU Conv2d ReLU MaxPool2d Conv2d ReLU MaxPool2d Conv2d ReLU MaxPool2d Flatten Linear ReLU Linear",
        ),
    ],
)
def test_layers_in_tutorial_order(name: str, kinds: str) -> None:
    arch = REGISTRY.architectures[name]
    assert [layer.kind for layer in summarize(arch.build(), arch.input_shape)] == kinds.split()


def test_mnist_cnn32_returns_logits_not_probabilities() -> None:
    torch.manual_seed(0)
    out = REGISTRY.architectures["mnist_cnn32"].build()(torch.rand(8, 1, 28, 28))
    assert not torch.allclose(out.sum(1), torch.ones(8)), "a softmax output would sum to one"
    assert (out < 0).any()


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("arch", ARCHS)
def test_every_architecture_builds_for_every_dataset(arch: str, dataset: str) -> None:
    ds = REGISTRY.datasets[dataset]
    model = REGISTRY.architectures[arch].build(ds.shape, ds.num_classes).eval()
    out = model(torch.rand(3, *ds.shape))
    assert out.shape == (3, ds.num_classes)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(("shape", "classes"), [((3, 28, 28), 2), ((1, 32, 32), 100), ((1, 40, 36), 7)])
def test_any_channels_size_and_class_count(arch: str, shape: tuple[int, int, int], classes: int) -> None:
    model = REGISTRY.architectures[arch].build(shape, classes)
    assert model(torch.rand(2, *shape)).shape == (2, classes)


@pytest.mark.parametrize("arch", ARCHS)
def test_too_small_images_give_a_clear_error(arch: str) -> None:
    with pytest.raises(ZooError, match=rf"{arch} cannot take 1x2x2 images: .* needs at least \d+x\d+ pixels"):
        REGISTRY.architectures[arch].build((1, 2, 2), 10)


def test_sizing_a_model_leaves_batch_norm_statistics_untouched() -> None:
    model = REGISTRY.architectures["lenet_bn"].build()
    fresh = torch.nn.BatchNorm2d(6)
    assert torch.equal(model.features[1].running_var, fresh.running_var)
    assert int(model.features[1].num_batches_tracked) == 0


@pytest.mark.parametrize("arch", ARCHS)
def test_recipes_are_complete(arch: str) -> None:
    a = REGISTRY.architectures[arch]
    assert a.tutorial_recipe is not None
    for recipe in (a.default_recipe, a.tutorial_recipe):
        assert recipe.lr > 0 and recipe.batch_size > 0 and recipe.epochs > 0
        assert recipe.dataset in REGISTRY.datasets


@pytest.mark.parametrize("name", ["mnist_cnn32", "mnist_cnn6_16", "cifar_seq"])
def test_max_pool_backward_gets_channels_last_gradients_in_training(name: str) -> None:
    """The trainer's layout is channels-last; a gradient in NCHW order (as Flatten returns it) makes PyTorch's
    CPU max-pool backward several times slower, so every max-pool backward must see channels-last ones."""
    from torch.utils._python_dispatch import TorchDispatchMode

    layouts: list[bool] = []

    class RecordLayouts(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            if func is torch.ops.aten.max_pool2d_with_indices_backward.default:
                layouts.append(args[0].is_contiguous(memory_format=torch.channels_last))
            return func(*args, **(kwargs or {}))

    arch = REGISTRY.architectures[name]
    model = arch.build().to(memory_format=torch.channels_last).train()
    x = torch.randn(4, *arch.input_shape).contiguous(memory_format=torch.channels_last)
    with RecordLayouts():
        model(x).sum().backward()
    assert layouts == [True] * sum(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_training_runs_the_declared_layers_bit_for_bit(name: str) -> None:
    """Training reorders ReLU and max-pool for speed; outputs and gradients must equal the declared order's."""
    arch = REGISTRY.architectures[name]
    model = arch.build().to(memory_format=torch.channels_last).train()
    x = torch.randn(8, *arch.input_shape).contiguous(memory_format=torch.channels_last)

    def outputs_and_gradients(forward):  # type: ignore[no-untyped-def]
        model.zero_grad()
        torch.manual_seed(0)  # the same dropout masks for both
        out = forward(x)
        out.pow(2).sum().backward()
        return [out.detach(), *(p.grad.clone() for p in model.parameters())]

    fast = outputs_and_gradients(model)
    declared = outputs_and_gradients(lambda t: model.classifier(model.features(t)))
    assert all(torch.equal(a, b) for a, b in zip(fast, declared, strict=True))


def test_training_pools_before_relu_only_where_they_commute() -> None:
    from zoo.plugins.nets import _training_order

    assert _training_order(REGISTRY.architectures["mnist_cnn32"].build().features) == [0, 2, 1, 3, 5, 4]
    lenet = REGISTRY.architectures["lenet_bn"].build().features  # sigmoid and average pooling do not commute
    assert _training_order(lenet) == list(range(len(lenet)))


def test_a_replaced_layer_is_trained_as_declared() -> None:
    model = REGISTRY.architectures["mnist_cnn32"].build().train()
    model.features[1] = torch.nn.GELU()  # does not commute with max-pooling
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(model(x), model.classifier(model.features(x)))
