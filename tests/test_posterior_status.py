"""What a posterior says about itself: one warning per kind of problem, and a notice for
the PSIS k̂ band where the Gaussian is usable but resampling is closer."""

import warnings

import numpy as np

from iai_prob.posterior_status import (
    PosteriorNotice,
    PosteriorStatus,
    PosteriorWarning,
    warn_if_unreliable,
)


def _status(converged, khat):
    count = len(khat)
    return PosteriorStatus.of(
        converged=converged,
        passes=np.ones(count),
        full_steps=np.ones(count, dtype=int),
        residual=np.zeros(count),
        khat=khat,
        batched=True,
    )


def _warned(status, **options):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        warn_if_unreliable(status, max_steps=50, batched=True, **options)
    return record


def test_each_khat_band_gets_its_own_message_naming_its_datasets():
    status = _status([True, True, True, False], [0.3, 0.6, 0.8, 0.65])
    record = _warned(status, names=["a", "b", "c", "d"])
    notices = [w for w in record if w.category is PosteriorNotice]
    problems = [w for w in record if w.category is PosteriorWarning]
    assert len(notices) == 1 and len(problems) == 2  # not converged; k̂ > 0.7
    (notice,) = notices
    # the unconverged group is warned about, not also noticed; the good one is left alone
    assert "group 'b'" in str(notice.message) and "'d'" not in str(notice.message)
    assert "importance_resample" in str(notice.message)
    assert any("group 'c'" in str(w.message) for w in problems)
    # a pipeline that turns PosteriorWarning into errors is not stopped by a notice
    assert not issubclass(PosteriorNotice, PosteriorWarning)


def test_a_good_posterior_says_nothing():
    assert _warned(_status([True, True], [0.2, 0.5])) == []
