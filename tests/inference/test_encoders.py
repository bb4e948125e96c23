"""Set encoders: output shape, permutation invariance, dependence on the count ``N``."""

from __future__ import annotations

import pytest
import torch

from iai_prob.inference import IterativeAmortizedGuide
from iai_prob.inference.encoders import DeepSets, SetTransformer, get_encoder
from iai_prob.models.pyro_networks import mlp

FEATURES = 3
EMBED = 8
ENCODERS = {
    "deep_sets": lambda: DeepSets(FEATURES, embed_dim=EMBED, hidden_dim=16),
    "set_transformer": lambda: SetTransformer(
        FEATURES, embed_dim=EMBED, hidden_dim=16, num_heads=2, num_inducing=4, num_blocks=1
    ),
}


@pytest.fixture(params=sorted(ENCODERS))
def encoder(request):
    return ENCODERS[request.param]().eval()


@pytest.fixture
def points():
    return torch.randn(4, 11, FEATURES)


def test_output_shape(encoder, points):
    assert encoder.embed_dim == EMBED
    assert encoder(points, 11).shape == (4, EMBED)
    assert encoder(points[:, :1], 1).shape == (4, EMBED)


def test_permutation_invariance(encoder, points):
    permutation = torch.randperm(points.shape[1])
    assert not torch.equal(permutation, torch.arange(points.shape[1]))
    torch.testing.assert_close(
        encoder(points[:, permutation], 11), encoder(points, 11), atol=1e-5, rtol=1e-5
    )


def test_tasks_are_encoded_independently(encoder, points):
    torch.testing.assert_close(
        encoder(points, 11)[2:], encoder(points[2:], 11), atol=1e-5, rtol=1e-5
    )


def test_output_depends_on_points_and_on_the_count(encoder, points):
    reference = encoder(points, 11)
    assert not torch.allclose(encoder(points, 1000), reference, atol=1e-4)
    changed = points.clone()
    changed[:, 0] += 1.0
    assert not torch.allclose(encoder(changed, 11), reference, atol=1e-4)


def test_registry():
    assert isinstance(get_encoder("deep_sets", FEATURES, embed_dim=4, hidden_dim=8), DeepSets)
    assert isinstance(get_encoder("set_transformer", FEATURES, embed_dim=4), SetTransformer)
    with pytest.raises(ValueError, match="'bogus'"):
        get_encoder("bogus", FEATURES)


def test_mlp_layers():
    net = mlp([3, 5, 7, 2])
    linear = [layer for layer in net if isinstance(layer, torch.nn.Linear)]
    assert [(layer.in_features, layer.out_features) for layer in linear] == [(3, 5), (5, 7), (7, 2)]
    assert isinstance(net[-1], torch.nn.Linear)  # no activation after the last layer
    assert net(torch.randn(6, 3)).shape == (6, 2)


@pytest.mark.parametrize(
    ("encoder", "options", "pattern"),
    [
        ("set_transformer", {"width": 8}, r"\['width'\] are not options of the 'set_transformer'"),
        ("deep_sets", {"num_heads": 2}, r"\['num_heads'\] are not options of the 'deep_sets'"),
        ("set_transformer", {"hidden_dim": 30}, "hidden_dim=30 must be a multiple of num_heads=4"),
        ("deep_sets", {"embed_dim": 0}, r"encoder_options\['embed_dim'\] must be a positive"),
        ("bogus", {}, "unknown encoder 'bogus'"),
    ],
)
def test_guides_of_both_backends_refuse_bad_encoder_options_when_made(encoder, options, pattern):
    """An encoder option that no encoder takes, or a size no encoder can have, is one line
    naming it when the guide is made, not a TypeError when it first sees data."""
    from iai_prob.numpyro import IterativeAmortizedGuide as NumPyroGuide

    for guide in (IterativeAmortizedGuide, NumPyroGuide):
        with pytest.raises(ValueError, match=pattern):
            guide(lambda: None, encoder=encoder, encoder_options=options)
