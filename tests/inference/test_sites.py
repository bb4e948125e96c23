"""``discover_layout``: global sites, unconstrained shapes, plates, and refused models."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from torch.distributions import biject_to, constraints

from iai_prob.inference.sites import discover_layout

# family -> [(site name, constrained event shape, unconstrained shape)]
EXPECTED_SITES = {
    "linear_regression": [("w", (2,), (2,))],
    "beta_bernoulli": [("probs", (), ())],
    "dirichlet_categorical": [("probs", (4,), (3,))],
    "gaussian_mixture": [("weights", (2,), (1,)), ("locs", (2, 2), (2, 2))],
}


def _layout(model, *args, **kwargs):
    trace = poutine.trace(model).get_trace(*args, **kwargs)
    return discover_layout(trace)


@pytest.mark.parametrize("name", sorted(EXPECTED_SITES))
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
def test_layout_of_families(name, batched, make_family, simulate):
    family = make_family(name)
    _, x, y = simulate(family, 3, 5)
    args = (x, y) if batched else (x[0], y[0])
    layout = _layout(family.model, *args)
    expected = EXPECTED_SITES[name]
    assert layout.site_names == tuple(site for site, _, _ in expected)
    for site, (_, event, unconstrained) in zip(layout.sites, expected, strict=True):
        assert site.event_shape == event
        assert site.unconstrained_shape == unconstrained
    assert layout.latent_dim == sum(torch.Size(u).numel() for _, _, u in expected)
    if batched:
        assert (layout.num_tasks, layout.tasks_dim, layout.max_plate_nesting) == (3, -2, 2)
        assert layout.batch_shape == (3, 1)
        assert layout.flat_tasks == 3
    else:
        assert (layout.num_tasks, layout.tasks_dim, layout.max_plate_nesting) == (None, None, 1)
        assert layout.batch_shape == ()
        assert layout.flat_tasks == 1


def test_signature_is_json_friendly_and_ordered(make_family, simulate):
    family = make_family("gaussian_mixture")
    _, x, y = simulate(family, 2, 4)
    assert _layout(family.model, x, y).signature() == [["weights", [1]], ["locs", [2, 2]]]


def test_pack_unpack_round_trip_and_jacobian(make_family, simulate):
    family = make_family("dirichlet_categorical")
    theta, x, y = simulate(family, 3, 6)
    layout = _layout(family.model, x, y)
    z = layout.pack(theta, batch_ndim=1)
    assert z.shape == (3, 3)
    ((site, value, log_jacobian),) = list(layout.unpack(z))
    assert site.name == "probs"
    torch.testing.assert_close(value, theta["probs"], atol=1e-5, rtol=1e-5)
    transform = biject_to(constraints.simplex)
    torch.testing.assert_close(log_jacobian, transform.log_abs_det_jacobian(z, value))
    with pytest.raises(ValueError, match="3 entries"):
        next(layout.unpack(torch.zeros(3, 4)))
    with pytest.raises(ValueError, match="probs"):
        layout.pack({}, batch_ndim=1)


def test_flat_and_joint_views_are_inverse(linreg, simulate):
    family = linreg
    _, x, y = simulate(family, 3, 5)
    layout = _layout(family.model, x, y)
    flat = torch.randn(4, 3, 2)
    joint = layout.to_joint(flat)
    assert joint.shape == (4, 3, 1, 2)
    torch.testing.assert_close(layout.to_flat(joint), flat)
    assert layout.particles_to_model(flat, particle_dim=-3).shape == (4, 3, 1, 2)
    assert layout.particles_to_model(flat, particle_dim=-4).shape == (4, 1, 3, 1, 2)


# ------------------------------------------------------------- refused models
def _discrete_global(x, y=None):
    k = pyro.sample("k", dist.Categorical(torch.ones(3) / 3))
    with pyro.plate("data", len(x)):
        pyro.sample("y", dist.Normal(k.float() * x, 1.0), obs=y)


def _no_data_plate(x, y=None):
    w = pyro.sample("w", dist.Normal(0.0, 1.0))
    with pyro.plate("obs", len(x)):
        pyro.sample("y", dist.Normal(w * x, 1.0), obs=y)


def _global_in_subsampled_plate(x, y=None):
    with pyro.plate("groups", 3, subsample_size=2):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(x)):
        pyro.sample("y", dist.Normal(mu.sum() * x, 1.0), obs=y)


def _no_global(x, y=None):
    with pyro.plate("data", len(x)):
        pyro.sample("y", dist.Normal(x, 1.0), obs=y)


def _local_latent(x, y=None):
    w = pyro.sample("w", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(x)):
        u = pyro.sample("u", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal(w * x + u, 1.0), obs=y)


@pytest.mark.parametrize(
    ("model", "patterns"),
    [
        (_discrete_global, ["'k'", "discrete"]),
        (_no_data_plate, ["no plate named 'data'", "obs"]),
        (_global_in_subsampled_plate, ["'mu'", "'groups'", "subsampled to 2 of 3"]),
        (_no_global, ["no latent site"]),
        (_local_latent, ["local latent site 'u'", "continuous"]),
    ],
    ids=[
        "discrete-global",
        "missing-data-plate",
        "global-in-subsampled-plate",
        "no-global",
        "local",
    ],
)
def test_refused_models_name_the_problem(model, patterns):
    x = torch.randn(5)
    with pytest.raises(ValueError) as info:
        _layout(model, x, torch.randn(5))
    for pattern in patterns:
        assert pattern in str(info.value)


def test_local_latents_are_left_alone_when_nothing_is_observed():
    """Without observations (``guide(x)``) the would-be observation is latent in the data
    plate; discovering the layout leaves that to ``read_task_data``, which asks for them."""
    layout = _layout(_local_latent, torch.randn(5))  # y not passed: 'u' and 'y' are latent
    assert layout.site_names == ("w",)


def test_an_enumerated_discrete_local_is_accepted_and_not_global(make_family, simulate):
    family = make_family("gaussian_mixture")
    _, x, y = simulate(family, 2, 6)
    trace = poutine.trace(family.model).get_trace(x, y)
    assert trace.nodes["assignment"]["infer"]["enumerate"] == "parallel"
    assert "assignment" not in discover_layout(trace).site_names
