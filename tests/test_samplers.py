"""Samplers on fixed logits keep exactly the expected tokens, with exact values."""

import numpy as np
import pytest

from serving.generation import samplers

PROBABILITIES = np.array([[0.05, 0.4, 0.3, 0.15, 0.1]])
LOGITS = np.log(PROBABILITIES)
TIED = np.log(np.array([[0.3, 0.3, 0.3, 0.1]]))


def kept(sampler, logits=LOGITS):
    return set(np.flatnonzero(sampler.distribution(logits)[0] > 0).tolist())


def test_registry_lists_and_builds_samplers():
    assert samplers.names() == ["greedy", "min_p", "sample", "temperature", "top_k", "top_p", "typical"]
    sampler = samplers.get("top_p", top_p=0.5)
    assert isinstance(sampler, samplers.TopP) and sampler.top_p == 0.5
    assert samplers.get(sampler.name, **sampler.get_config()).get_config() == {"top_p": 0.5}
    with pytest.raises(ValueError, match="Valid samplers: greedy, min_p, sample, temperature, top_k, top_p, typical"):
        samplers.get("nucleus")
    with pytest.raises(ValueError, match="does not take"):
        samplers.get("top_k", top_p=0.5)


def test_greedy_takes_the_argmax_with_lowest_id_on_ties():
    assert samplers.Greedy().sample(LOGITS).tolist() == [1]
    assert samplers.Greedy().sample(np.array([[0.0, 2.0, 2.0]])).tolist() == [1]
    np.testing.assert_array_equal(samplers.Greedy().distribution(TIED), [[1.0, 0.0, 0.0, 0.0]])


def test_temperature_scales_the_logits():
    logits = np.array([[2.0, -4.0, 0.0]])
    np.testing.assert_array_equal(samplers.Temperature(2.0).filter(logits), [[1.0, -2.0, 0.0]])
    expected = np.exp([1.0, -2.0, 0.0]) / np.exp([1.0, -2.0, 0.0]).sum()
    np.testing.assert_allclose(samplers.Temperature(2.0).distribution(logits)[0], expected, rtol=1e-12)
    # Below 1 the distribution sharpens: the top token gains.
    assert samplers.Temperature(0.5).distribution(logits)[0, 0] > samplers.Sampler().distribution(logits)[0, 0]


@pytest.mark.parametrize("top_p, expected", [
    (0.3, {1}),              # the top token alone (0.4) already reaches 0.3
    (0.4, {1}),              # exactly 0.4: the boundary token is the whole nucleus
    (0.41, {1, 2}),          # 0.4 < 0.41 <= 0.7: the second token crosses the threshold and is kept
    (0.7, {1, 2}),           # exactly 0.7
    (0.71, {1, 2, 3}),
    (0.85, {1, 2, 3}),
    (0.86, {1, 2, 3, 4}),
    (0.96, {0, 1, 2, 3, 4}),
    (1.0, {0, 1, 2, 3, 4}),
])
def test_top_p_keeps_exactly_the_nucleus(top_p, expected):
    sampler = samplers.TopP(top_p)
    assert kept(sampler) == expected
    members = sorted(expected)
    distribution = sampler.distribution(LOGITS)[0]
    np.testing.assert_allclose(distribution[members], PROBABILITIES[0, members] / PROBABILITIES[0, members].sum())
    assert distribution.sum() == pytest.approx(1.0)


def test_top_p_breaks_ties_by_lower_id():
    assert kept(samplers.TopP(0.5), TIED) == {0, 1}
    assert kept(samplers.TopP(0.3), TIED) == {0}
    assert kept(samplers.TopP(0.61), TIED) == {0, 1, 2}


def test_top_k_keeps_exactly_k_with_ties_to_lower_ids():
    assert kept(samplers.TopK(2)) == {1, 2}
    assert kept(samplers.TopK(2), TIED) == {0, 1}
    assert kept(samplers.TopK(10)) == {0, 1, 2, 3, 4}
    np.testing.assert_allclose(samplers.TopK(2).distribution(LOGITS)[0], [0, 0.4 / 0.7, 0.3 / 0.7, 0, 0])


def test_min_p_keeps_tokens_above_the_scaled_maximum():
    assert kept(samplers.MinP(0.5)) == {1, 2}         # p >= 0.2
    assert kept(samplers.MinP(0.3)) == {1, 2, 3}      # p >= 0.12
    assert kept(samplers.MinP(0.2)) == {1, 2, 3, 4}   # p >= 0.08
    assert kept(samplers.MinP(1.0)) == {1}
    assert kept(samplers.MinP(0.0)) == {0, 1, 2, 3, 4}
    assert kept(samplers.MinP(1.0), TIED) == {0, 1, 2}  # every token tied with the maximum


def test_typical_keeps_the_tokens_closest_to_the_entropy():
    # By hand: H = 1.3923 nats; |-log p - H| = 1.603, 0.476, 0.188, 0.505, 0.910 for ids 0..4,
    # so tokens enter in the order 2 (0.3), 1 (0.4), 3 (0.15), 4 (0.1), 0 (0.05).
    assert kept(samplers.Typical(0.3)) == {2}          # exactly 0.3: token 2 alone (top-p 0.3 keeps token 1)
    assert kept(samplers.Typical(0.5)) == {1, 2}
    assert kept(samplers.Typical(0.75)) == {1, 2, 3}
    assert kept(samplers.Typical(0.9)) == {1, 2, 3, 4}
    assert kept(samplers.Typical(1.0)) == {0, 1, 2, 3, 4}
    np.testing.assert_allclose(samplers.Typical(0.5).distribution(LOGITS)[0], [0, 0.4 / 0.7, 0.3 / 0.7, 0, 0])


def test_typical_ignores_tokens_already_filtered_out():
    logits = samplers.TopK(3).filter(LOGITS)  # tokens 1, 2, 3 remain: p = 0.4/0.85, 0.3/0.85, 0.15/0.85
    distribution = samplers.Typical(1.0).distribution(logits)[0]
    assert set(np.flatnonzero(distribution)) == {1, 2, 3}
    assert kept(samplers.Typical(0.99), logits) == {1, 2, 3}


def test_chained_filters_apply_in_order():
    chain = samplers.from_generation_options(do_sample=True, top_k=3, top_p=0.7)
    assert kept(chain) == {1, 2}
    # top_p sees the top-k distribution renormalized: 0.4/0.85 = 0.47 < 0.5, so token 2 joins.
    assert kept(samplers.from_generation_options(do_sample=True, top_k=3, top_p=0.5)) == {1, 2}
    assert kept(samplers.from_generation_options(do_sample=True, top_k=3, top_p=0.47)) == {1}
    assert isinstance(samplers.from_generation_options(do_sample=False, top_p=0.5), samplers.Greedy)
    assert type(samplers.from_generation_options(do_sample=True)) is samplers.Sampler
    assert isinstance(samplers.from_generation_options(do_sample=True, temperature=0.5), samplers.Temperature)


def test_sampling_frequencies_follow_the_distribution_and_rows_are_independent():
    sampler = samplers.TopP(0.7)
    generator = np.random.default_rng(0)
    draws = [sampler.sample(LOGITS, [generator])[0] for _ in range(4000)]
    counts = np.bincount(draws, minlength=5) / len(draws)
    np.testing.assert_allclose(counts, [0, 0.4 / 0.7, 0.3 / 0.7, 0, 0], atol=0.03)
    # A row's draw depends only on its own generator, whatever else is in the batch.
    alone = [sampler.sample(LOGITS, [np.random.default_rng(5)])[0] for _ in range(1)]
    batch = sampler.sample(np.repeat(LOGITS, 3, 0), [np.random.default_rng(9), np.random.default_rng(5),
                                                     np.random.default_rng(1)])
    assert batch[1] == alone[0]


def test_draw_inverts_the_cumulative_distribution():
    class Fixed:
        def __init__(self, value):
            self.value = value

        def random(self):
            return self.value

    probabilities = np.array([[0.0, 0.5, 0.0, 0.5, 0.0]])
    assert samplers.draw(probabilities, [Fixed(0.0)]).tolist() == [1]
    assert samplers.draw(probabilities, [Fixed(0.4999)]).tolist() == [1]
    assert samplers.draw(probabilities, [Fixed(0.5)]).tolist() == [3]
    assert samplers.draw(probabilities, [Fixed(1.0)]).tolist() == [3]  # never the zero-probability tail
    with pytest.raises(ValueError, match="one numpy.random.Generator per row"):
        samplers.draw(probabilities, [])


def test_everything_filtered_out_is_a_clear_error():
    with pytest.raises(ValueError, match=r"no token is left to choose from in row\(s\) \[0\]"):
        samplers.Sampler().distribution(np.full((1, 3), -np.inf))


@pytest.mark.parametrize("make, message", [
    (lambda: samplers.TopP(0.0), r"top_p must be in \(0, 1\]"),
    (lambda: samplers.TopP(1.5), r"top_p must be in \(0, 1\]"),
    (lambda: samplers.TopK(0), "top_k must be a positive integer"),
    (lambda: samplers.TopK(2.5), "top_k must be a positive integer"),
    (lambda: samplers.MinP(-0.1), r"min_p must be in \[0, 1\]"),
    (lambda: samplers.Typical(0.0), r"typical_p must be in \(0, 1\]"),
    (lambda: samplers.Temperature(0.0), "temperature must be a finite number > 0"),
    (lambda: samplers.Temperature(-1.0), "temperature must be a finite number > 0"),
])
def test_invalid_parameters(make, message):
    with pytest.raises(ValueError, match=message):
        make()
