"""Matching species names written elsewhere (background species, annotation tables) to the label set.

A name may be written as the label (``Coereba_flaveola``), a scientific name (``Coereba flaveola``), an
English name (``Bananaquit``) or BirdNET's ``Genus species_Common Name``, in any case and with underscores or
spaces. :class:`LabelMatcher` compares normalised names (lower case, one space between words): first the
whole name against every label, scientific and English name of the label set; then its first two words (a
binomial) against the labels' and scientific names' binomials. One matcher serves training targets
(Xeno-canto's ``background_species``) and soundscape annotations, so both are matched the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

NO_BIRD = "no_bird"  # the label of negatives: recordings with none of the label set's species (targets all 0)
SEPARATORS = re.compile(r"[\s_]+")
LIST_SEPARATORS = re.compile(r"[;,]")


def normalise(name: str) -> str:
    """Lower case, underscores and runs of white space as one space: ``Coereba_flaveola`` -> ``coereba flaveola``."""
    return " ".join(SEPARATORS.split(str(name).strip().lower())).strip()


def binomial(name: str) -> str:
    """The first two words of a normalised name (``coereba flaveola bananaquit`` -> ``coereba flaveola``)."""
    return " ".join(normalise(name).split(" ")[:2])


def split_names(value: object) -> list[str]:
    """A ``;``- (or ``,``-) separated list of names, as Xeno-canto's ``background_species``; empty for NaN/None."""
    if value is None or (isinstance(value, float) and value != value):
        return []
    return [part.strip() for part in LIST_SEPARATORS.split(str(value)) if part.strip()]


class LabelMatcher:
    """The label of the label set that a name denotes, or None."""

    def __init__(self, species: Iterable[str], names: Mapping[str, Mapping[str, str] | str] | None = None) -> None:
        """``names``: per label, its scientific name (a string) or a mapping with ``scientific_name`` and/or
        ``english_name`` (as the bundle's ``names``)."""
        self.species = list(species)
        self._exact: dict[str, str] = {}
        self._binomial: dict[str, str] = {}
        for label in self.species:
            given = (names or {}).get(label) or {}
            if isinstance(given, str):
                given = {"scientific_name": given}
            scientific = [label, given.get("scientific_name") or ""]
            for name in [*scientific, given.get("english_name") or ""]:
                if normalise(name):
                    self._exact.setdefault(normalise(name), label)
            for name in scientific:
                if len(normalise(name).split(" ")) >= 2:
                    self._binomial.setdefault(binomial(name), label)

    def match(self, name: str) -> str | None:
        key = normalise(name)
        if not key:
            return None
        return self._exact.get(key) or self._binomial.get(binomial(key))

    def match_all(self, value: object) -> tuple[list[str], list[str]]:
        """(matched labels without duplicates, names that match nothing) of a ``;``-separated list."""
        matched: list[str] = []
        unmatched: list[str] = []
        for name in split_names(value):
            label = self.match(name)
            if label is None:
                unmatched.append(name)
            elif label not in matched:
                matched.append(label)
        return matched, unmatched
