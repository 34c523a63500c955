"""IDyOM's PPM as the results table's literature baseline: the figures it gives by hand."""
import numpy as np
import pytest

from chromasonic_lib.ppm import PPM, combine, information_content


def test_the_long_term_model_interpolates_escape_c_with_exclusion_down_to_order_minus_one():
    """After [0], trained on [0 1 0 1]: order 1 saw {1: 2} (weight 2/3), order 0 {0: 2, 1: 2}
    with the 1s excluded from its tokens (weight 2/4), order -1 1/(3 + 1 - 2); normalised."""
    ltm = PPM.long_term([0, 1, 2], [[0, 1, 0, 1]])
    raw = np.array([1 / 6 + 1 / 12, 2 / 3 + 1 / 6 + 1 / 12, 1 / 12])
    np.testing.assert_allclose(ltm.distribution([0]), raw / raw.sum())


def test_ppm_star_predicts_from_the_shortest_deterministic_context():
    """[0 1 0], [1 0] and [0] were each followed by 1 alone: the prediction starts at [0]."""
    ltm = PPM.long_term([0, 1, 2], [[0, 1, 0, 1]])
    np.testing.assert_allclose(ltm.distribution([0, 1, 0]), ltm.distribution([0]))
    assert ltm.distribution([2, 2]).sum() == pytest.approx(1)       # a context never seen


def test_the_short_term_model_counts_a_note_again_only_in_its_longest_context_seen_before():
    stm = PPM.short_term([0, 1, 2])
    melody = [0, 1, 0, 1]
    for i, s in enumerate(melody):
        stm.update(melody[:i], s)
    assert stm.counts[()] == {0: 2, 1: 2}
    assert stm.excluded_counts[()] == {0: 2, 1: 1}      # the last 1 counted in [0] instead
    assert stm.excluded_counts[(0,)] == {1: 2}


def test_the_surer_model_weighs_more_in_the_combination():
    sure, unsure = np.array([0.9, 0.05, 0.05]), np.full(3, 1 / 3)
    combined = combine([sure, unsure])
    assert combined.sum() == pytest.approx(1) and combined[0] > 0.85
    np.testing.assert_allclose(combine([sure, sure]), sure)


def test_every_system_scores_every_note_and_an_unknown_one_is_refused():
    train, test = [[0, 2, 4, 2, 0], [0, 2, 4, 5, 4]], [[0, 2, 4, 2], [4, 2, 0]]
    for models in ("ltm", "ltm+", "stm", "both", "both+"):
        ics = information_content(train, test, range(6), models)
        assert [len(ic) for ic in ics] == [4, 3] and all((ic > 0).all() for ic in ics)
    # Learning the test melodies as it goes, the second melody is better predicted.
    assert information_content(train, test, range(6), "ltm+")[1].sum() < \
        information_content(train, test, range(6), "ltm")[1].sum()
    with pytest.raises(ValueError, match="models must be one of"):
        information_content(train, test, range(6), "ltm++")
