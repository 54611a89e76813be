"""The styles' schedules against docs/semantics.md's table, written out by hand."""

import random

import pytest

from tbptt_bench.styles import (
    PRESETS,
    TBPTT,
    RandomTruncation,
    StyleError,
    full,
    one_step,
    overlapping,
    parse_style,
    random_depth,
    tf_style,
    williams_peng,
)
from tbptt_bench.styles import random as random_style


def test_full_bptt_one_update_reaching_all_the_way_back():
    assert full().update_times(6) == [6]
    assert full().depths(6) == [1, 2, 3, 4, 5, 6]


def test_williams_peng_updates_every_step_with_depth_n_or_s_early_on():
    s = williams_peng(3)
    assert s.update_times(6) == [1, 2, 3, 4, 5, 6]
    assert s.depths(6) == [1, 2, 3, 3, 3, 3]


def test_one_step_context_last_loss_one_step_rest_readout_only():
    assert one_step(3).update_times(7) == [3, 6, 7]
    assert one_step(3).depths(7) == [0, 0, 1, 0, 0, 1, 1]


def test_overlapping_depths_range_from_k2_minus_k1_plus_1_to_k2():
    s = overlapping(2, 5)
    assert s.update_times(8) == [2, 4, 6, 8]
    assert s.depths(8) == [1, 2, 3, 4, 4, 5, 4, 5]  # s - max(t - 5, 0); capped by s early on


def test_tf_style_depths_one_to_k_and_the_last_short_block_reaches_k():
    s = tf_style(4)
    assert s.depths(8) == [1, 2, 3, 4, 1, 2, 3, 4]
    assert sum(s.depths(8)) / 8 == (4 + 1) / 2
    assert s.update_times(10) == [4, 8, 10]
    assert s.depths(10)[-2:] == [3, 4]  # window (10-4, 10]: steps 9, 10 reach back 3 and 4


@pytest.mark.parametrize("T", [1, 5, 13])
@pytest.mark.parametrize(
    "style",
    [full(), williams_peng(3), one_step(4), overlapping(3, 5), tf_style(4), TBPTT(7, 3), TBPTT(20, 30)],
)
def test_every_loss_belongs_to_exactly_one_update(style, T):
    seen = []
    for prev, t, start in style.updates(T):
        assert 0 <= start <= t and prev < t
        seen.extend(range(prev + 1, t + 1))
    assert seen == list(range(1, T + 1))


def test_presets_classify_and_round_trip_through_their_spec_string():
    for style in [
        full(),
        williams_peng(5),
        one_step(5),
        overlapping(2, 5),
        tf_style(5),
        random_style(0.25),
        RandomTruncation(0.5, 3, 6, per_stream=True),
    ]:
        assert parse_style(style.spec) == style
    assert [
        parse_style(s).preset
        for s in [
            "full()",
            "williams_peng(5)",
            "one_step(5)",
            "overlapping(2, 5)",
            "tf_style(5)",
            "random(0.2)",
        ]
    ] == ["full", "williams_peng", "one_step", "overlapping", "tf_style", "random"]
    assert tf_style(5).n == williams_peng(5).n == one_step(5).n == overlapping(2, 5).n == 5
    # the notes' full-BPTT form is not an n-block peer (its pi is a keep probability: E[depth] 1.25);
    # random_depth(n) is TF-style(n)'s random peer
    assert random_style(0.2).n is None
    assert random_depth(5).n == 5 and parse_style(random_depth(5).spec) == random_depth(5)
    assert set(PRESETS) >= {"full", "williams_peng", "one_step", "overlapping", "tf_style", "random"}


def test_random_truncation_sample_depths_never_exceed_the_deterministic_ones():
    s = RandomTruncation(0.5, 4, 6)
    rng = random.Random(0)
    for _ in range(50):
        sampled = s.sample_depths(13, rng)
        assert all(0 <= d <= full_d and (full_d == 0) == (d == 0) for d, full_d in zip(sampled, s.depths(13)))
    assert RandomTruncation(1.0, 4, 6).sample_depths(13, rng) == TBPTT(4, 6).depths(13)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: TBPTT(0, 3), "k1=0"),
        (lambda: TBPTT(2, -1), "k2=-1"),
        (lambda: TBPTT(2.5, 3), "k1=2.5"),
        (lambda: TBPTT(True, 3), "k1=True"),
        (lambda: overlapping(5, 5), "k1 < k2"),
        (lambda: random_style(0.0), "pi=0.0"),
        (lambda: random_style(1.5), "[1e-09, 1]"),
        (lambda: random_style(float("nan")), "pi=nan"),
        (lambda: parse_style("tf_style(x)"), "'x'"),
        (lambda: parse_style("nope(3)"), "known presets"),
        (lambda: parse_style("tf_style"), "preset call"),
        (lambda: parse_style("tf_style(1, 2, 3)"), "tf_style(1, 2, 3)"),
        (lambda: full().update_times(0), "T=0"),
    ],
)
def test_bad_values_name_the_value_and_what_is_allowed(make, message):
    with pytest.raises(StyleError, match=None) as err:
        make()
    assert message in str(err.value) and "\n" not in str(err.value)
