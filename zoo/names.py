"""Resolving what a user types (`lenet`, `cnn32`, `Fashion`) to one registered name."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping

from zoo.errors import AmbiguousName, UnknownName

__all__ = ["normalize", "resolve", "words"]


def normalize(name: str) -> str:
    """Case-fold and treat ``-`` and ``_`` as the same character."""
    return name.strip().lower().replace("-", "_")


def words(name: str) -> list[str]:
    """The ``_``/``-`` separated words of a name, normalised."""
    return [w for w in normalize(name).split("_") if w]


def _words_match(query: list[str], name: list[str]) -> bool:
    """True if each query word starts consecutive words of the name (`cnn6` ~ mnist_cnn6_16)."""
    span = len(query)
    return any(all(name[start + i].startswith(q) for i, q in enumerate(query)) for start in range(len(name) - span + 1))


def resolve(query: str, names: Mapping[str, Iterable[str]], kind: str = "name") -> str:
    """Return the registered name ``query`` stands for.

    ``names`` maps each registered name to its aliases.  In order: an exact
    name, an alias, then a unique match on name words (``lenet`` → lenet_bn).
    Several matches raise ``AmbiguousName`` listing them; none raises
    ``UnknownName`` with the closest names as suggestions.
    """
    wanted = normalize(query)
    spellings = {name: [name, *aliases] for name, aliases in names.items()}
    for name in names:
        if normalize(name) == wanted:
            return name
    for name, spelt in spellings.items():
        if wanted in map(normalize, spelt[1:]):
            return name

    query_words = words(query)
    hits = sorted(
        name
        for name, spelt in spellings.items()
        if query_words and any(_words_match(query_words, words(s)) for s in spelt)
    )
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise AmbiguousName(f"{kind} {query!r} is ambiguous: it could be {', '.join(hits)}; give more of the name")

    known = sorted(names)
    by_spelling = {normalize(s): name for name, spelt in spellings.items() for s in spelt}
    close = dict.fromkeys(by_spelling[s] for s in difflib.get_close_matches(wanted, by_spelling, n=3, cutoff=0.6))
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    listing = f"known {kind}s: {', '.join(known)}" if known else f"no {kind}s are registered"
    raise UnknownName(f"unknown {kind} {query!r}; {hint}{listing} (see `zoo list`)")
