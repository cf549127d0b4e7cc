"""Names written elsewhere (background species, annotation tables) match the label set as training labels do."""

from __future__ import annotations

from birdpipe.data.labels import LabelMatcher, split_names

NAMES = {
    "Coereba_flaveola": {"scientific_name": "Coereba flaveola", "english_name": "Bananaquit"},
    "Vireo_latimeri": {"scientific_name": "Vireo latimeri", "english_name": "Puerto Rican Vireo"},
}


def test_every_way_of_writing_a_species_matches_its_label():
    matcher = LabelMatcher(NAMES, NAMES)
    for name in ("Coereba_flaveola", "coereba flaveola", "Coereba  flaveola", "BANANAQUIT",
                 "Coereba flaveola_Bananaquit", "Coereba flaveola portoricensis"):  # fmt: skip
        assert matcher.match(name) == "Coereba_flaveola", name
    assert matcher.match("Puerto Rican Vireo") == "Vireo_latimeri"
    assert matcher.match("Vireo altiloquus") is None  # same genus, another species
    assert matcher.match("Puerto Rican Tody") is None  # an English name is matched whole, never by two words
    assert matcher.match("") is None


def test_a_label_set_without_names_matches_labels_and_their_binomials():
    matcher = LabelMatcher(["Synthornis_velox"])
    assert matcher.match("synthornis velox") == "Synthornis_velox"
    assert matcher.match("Synthornis_velox_Swift Songbird") == "Synthornis_velox"


def test_background_species_lists_split_and_match_without_duplicates():
    matcher = LabelMatcher(NAMES, {k: v["scientific_name"] for k, v in NAMES.items()})
    matched, unmatched = matcher.match_all("Coereba flaveola; Todus mexicanus;Vireo latimeri;coereba flaveola")
    assert matched == ["Coereba_flaveola", "Vireo_latimeri"] and unmatched == ["Todus mexicanus"]
    assert split_names(float("nan")) == [] and split_names(None) == [] and split_names("") == []
