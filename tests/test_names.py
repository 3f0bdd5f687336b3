"""The name resolver: exact names, aliases, short names, ambiguity and suggestions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zoo.errors import AmbiguousName, UnknownName
from zoo.names import normalize, resolve, words

ARCHS = {
    "mnist_cnn32": ("cnn32",),
    "mnist_cnn6_16": ("cnn6", "cnn6_16"),
    "lenet_bn": ("lenet", "lenet5"),
    "cifar_seq": ("cifar",),
}
DATASETS = {"mnist": (), "fashionmnist": ("fashion_mnist", "fmnist"), "cifar10": ("cifar_10",)}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("lenet", "lenet_bn"),
        ("cnn32", "mnist_cnn32"),
        ("cnn6", "mnist_cnn6_16"),
        ("cnn6-16", "mnist_cnn6_16"),
        ("MNIST-CNN32", "mnist_cnn32"),
        ("lenet5", "lenet_bn"),
        ("cifar", "cifar_seq"),
        ("seq", "cifar_seq"),
    ],
)
def test_architecture_short_names(query: str, expected: str) -> None:
    assert resolve(query, ARCHS) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [("fashion", "fashionmnist"), ("mnist", "mnist"), ("Fashion-MNIST", "fashionmnist"), ("cifar", "cifar10")],
)
def test_dataset_short_names(query: str, expected: str) -> None:
    assert resolve(query, DATASETS) == expected


def test_ambiguous_name_lists_candidates() -> None:
    with pytest.raises(AmbiguousName, match=r"mnist_cnn32, mnist_cnn6_16"):
        resolve("cnn", ARCHS, "architecture")


def test_unknown_name_suggests_closest_and_lists_all() -> None:
    with pytest.raises(UnknownName) as info:
        resolve("lenat", ARCHS, "architecture")
    message = str(info.value)
    assert "did you mean lenet_bn?" in message
    assert "cifar_seq, lenet_bn, mnist_cnn32, mnist_cnn6_16" in message


def test_unknown_name_without_close_match_lists_all() -> None:
    with pytest.raises(UnknownName, match="known architectures: cifar_seq") as info:
        resolve("vgg", ARCHS, "architecture")
    assert "did you mean" not in str(info.value)


def test_exact_name_beats_a_longer_match() -> None:
    # "mnist" is a word of two architectures too, but the exact name wins.
    assert resolve("mnist", {**DATASETS, "mnist_cnn32": ()}) == "mnist"


names = st.from_regex(r"[a-z][a-z0-9]{0,6}(_[a-z0-9]{1,5}){0,3}", fullmatch=True)
tables = st.dictionaries(names, st.just(()), min_size=1, max_size=8)


@given(tables, st.data())
def test_every_registered_name_resolves_to_itself_in_any_spelling(
    table: dict[str, tuple[()]], data: st.DataObject
) -> None:
    name = data.draw(st.sampled_from(sorted(table)))
    spelling = data.draw(st.sampled_from([name, name.upper(), name.replace("_", "-"), f"  {name} "]))
    assert resolve(spelling, table) == name


@given(tables, st.text(max_size=20))
def test_any_query_resolves_to_a_matching_name_or_fails_cleanly(table: dict[str, tuple[()]], query: str) -> None:
    try:
        found = resolve(query, table)
    except (AmbiguousName, UnknownName) as exc:
        assert str(exc)
    else:
        assert found in table
        query_words = words(query)
        assert normalize(found) == normalize(query) or all(
            any(w.startswith(q) for w in words(found)) for q in query_words
        )


@given(tables, names)
def test_a_word_prefix_of_exactly_one_name_resolves_to_it(table: dict[str, tuple[()]], name: str) -> None:
    word = words(name)[0]
    matching = [n for n in table if any(w.startswith(word) for w in words(n))]
    if normalize(word) in table or len(matching) != 1:
        return
    assert resolve(word, table) == matching[0]
