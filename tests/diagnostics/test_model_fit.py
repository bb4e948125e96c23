"""Posterior predictive p-values of datasets stacked with padding."""

import numpy as np

from iai_prob.diagnostics.model_fit import predictive_pvalues


def test_padded_values_are_left_out_of_the_statistics():
    rng = np.random.default_rng(0)
    sizes = [3, 8, 5]
    replicated = [rng.normal(size=(200, n)) * (i + 1) for i, n in enumerate(sizes)]
    observed = [rng.normal(size=n) * 2 for n in sizes]
    width = max(sizes)
    padded_rep = np.full((200, len(sizes), width), 1e6)  # padding that would dominate
    padded_obs = np.full((len(sizes), width), -1e6)
    for t, n in enumerate(sizes):
        padded_rep[:, t, :n], padded_obs[t, :n] = replicated[t], observed[t]
    valid = np.arange(width) < np.array(sizes)[:, None]
    got = predictive_pvalues(padded_rep, padded_obs, "y", valid)
    for t in range(len(sizes)):
        alone = predictive_pvalues(replicated[t][:, None], observed[t][None], "y")
        for name in ("mean(y)", "sd(y)"):
            assert got[name][t] == alone[name][0]
    assert 0.0 < got["sd(y)"][0] < 1.0
