"""The image threshold (docs/decisions.md#image-threshold): a rank of the good validation images'
image scores chosen for a target false-alarm rate, against the pixel quantile that rejects every
good image; the rates a number of images can promise; the promise checked on simulated scores."""

import numpy as np
import pytest

from ust.eval.thresholds import (
    ImageThreshold,
    achievable_false_alarm_rate,
    calibrate_image_threshold,
    good_images_needed,
    image_threshold,
    threshold_quantile,
)


def good_map(rng, size=32):
    """A good part's map: texture noise in [0, 0.9) and one bright speck (a reflection every good
    part has) of score 1.0, so the map's maximum is above 99 % of the good pixels."""
    m = 0.9 * rng.random((size, size))
    m[rng.integers(size), rng.integers(size)] = 1.0
    return m


def defective_map(rng, size=32):
    m = good_map(rng, size)
    y, x = rng.integers(4, size - 8, 2)
    m[y : y + 4, x : x + 4] += 1.5  # a 4 × 4 defect
    return m


def test_image_threshold_accepts_good_images_the_pixel_threshold_rejects():
    rng = np.random.default_rng(0)
    val = [good_map(rng) for _ in range(50)]
    good = [good_map(rng) for _ in range(20)]
    bad = [defective_map(rng) for _ in range(10)]
    pixel_t = threshold_quantile(val, 0.99)
    score = {name: np.array([m.max() for m in ms]) for name, ms in (("good", good), ("bad", bad))}
    assert score["good"].max() < score["bad"].min()  # the image scores separate
    assert (score["good"] > pixel_t).all() and (score["bad"] > pixel_t).all()  # pixel rule: all out

    result = calibrate_image_threshold([m.max() for m in val], 0.05)
    assert result.supported and result.rank == 2  # ⌊0.05 · 51⌋
    assert not (score["good"] > result.threshold).any()  # ties with the threshold are accepted
    assert (score["bad"] > result.threshold).all()


@pytest.mark.parametrize(("n", "rate"), [(5, 1 / 6), (50, 1 / 51), (500, 1 / 501)])
def test_achievable_rate_is_one_over_n_plus_one(n, rate):
    assert achievable_false_alarm_rate(n) == rate
    result = calibrate_image_threshold(np.arange(n, dtype=float), rate)
    assert result.supported and result.rank == 1 and result.threshold == n - 1
    assert result.supported_rate == pytest.approx(rate)


@pytest.mark.parametrize(("alpha", "needed"), [(0.01, 99), (0.05, 19), (0.1, 9), (0.5, 1)])
def test_images_needed(alpha, needed):
    assert good_images_needed(alpha) == needed
    assert calibrate_image_threshold(np.ones(needed), alpha).supported
    if needed > 1:
        assert not calibrate_image_threshold(np.ones(needed - 1), alpha).supported


@pytest.mark.parametrize(
    ("n", "alpha", "rank"),
    [(19, 0.05, 1), (39, 0.05, 2), (99, 0.07, 7), (99, 0.29, 29), (199, 0.01, 2), (3, 0.9, 3)],
)
def test_rank_is_the_largest_that_keeps_the_promise(n, alpha, rank):
    scores = np.random.default_rng(n).permutation(np.arange(n, dtype=float))
    result = calibrate_image_threshold(scores, alpha)
    assert result.rank == rank and result.threshold == n - rank  # the rank-th largest
    assert result.supported_rate == rank / (n + 1) <= alpha + 1e-12
    assert (rank + 1) / (n + 1) > alpha or rank == n
    assert image_threshold(scores, alpha) == result.threshold


def test_stricter_target_than_the_images_support_gives_the_maximum_and_says_so():
    scores = [0.3, 2.0, 1.2, 0.8, 1.1]
    result = calibrate_image_threshold(scores, 0.01)
    assert result == ImageThreshold(
        threshold=2.0,
        requested_rate=0.01,
        supported_rate=1 / 6,
        n_images=5,
        images_needed=99,
        rank=1,
    )
    assert not result.supported
    assert result.message == (
        "with 5 good validation images the smallest false-alarm rate a threshold can promise is "
        "1/6 = 16.7 %; a target of 1 % needs at least 99 good images: give more with "
        "--val-images DIR or a larger --val-fraction"
    )
    assert calibrate_image_threshold(np.arange(99.0), 0.01).message == ""
    assert "2/200 = 1 %" in calibrate_image_threshold(np.arange(199.0), 0.01).summary


@pytest.mark.parametrize(("n", "alpha"), [(50, 0.05), (500, 0.01), (10, 0.2)])
def test_false_alarm_rate_on_simulated_good_images_keeps_the_promise(n, alpha):
    """Many seeded calibrations on heavy-tailed good scores (Gumbel: the maximum of a map), each
    judged on new good images: the mean false-alarm rate is ≤ α and equals rank/(n + 1)."""
    rng = np.random.default_rng(1)
    trials, new = 2000, 200
    rates = np.empty(trials)
    for i in range(trials):
        t = image_threshold(rng.gumbel(size=n), alpha)
        rates[i] = np.mean(rng.gumbel(size=new) > t)
    expected = calibrate_image_threshold(np.zeros(n), alpha).supported_rate
    assert rates.mean() <= alpha + 0.002
    assert rates.mean() == pytest.approx(expected, abs=4 * rates.std() / np.sqrt(trials) + 1e-4)


def test_bad_input_is_refused():
    for alpha in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="false-alarm rate"):
            calibrate_image_threshold([1.0, 2.0], alpha)
    with pytest.raises(ValueError, match="no good validation image scores"):
        image_threshold([], 0.05)
    with pytest.raises(ValueError, match="NaN or infinite"):
        image_threshold([1.0, float("nan")], 0.05)
    with pytest.raises(ValueError, match="at least one"):
        achievable_false_alarm_rate(0)
