"""The set encoder compiled at inference (:mod:`iai_prob.inference.compiled_forward`):
the eager embedding, the weights read at every call, nothing compiled under gradients."""

from __future__ import annotations

import torch

from iai_prob.inference import compiled_forward as compiled
from iai_prob.inference.compiled_log_joint import ENV_VAR, compiling_now
from iai_prob.inference.encoders import SetTransformer


def _encoder_and_context():
    torch.manual_seed(0)
    encoder = SetTransformer(feature_dim=3)
    context = torch.randn(2, 20, 3, generator=torch.Generator().manual_seed(1))
    return encoder, context


def test_a_compiled_encoder_gives_the_eager_embedding_and_reads_new_weights(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "1")
    encoder, context = _encoder_and_context()
    with torch.no_grad():
        expected = encoder(context, 500)
        with compiling_now():
            got = compiled.compiled_forward(encoder, context, 500)
        (kernel,) = compiled._kernels[encoder].values()
        assert callable(kernel)  # compiled, checked and faster than the eager forward
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
        encoder.embed.weight.mul_(1.5)  # trained further, or loaded: a new state
        torch.testing.assert_close(
            compiled.compiled_forward(encoder, context, 500),
            encoder(context, 500),
            rtol=1e-4,
            atol=1e-4,
        )


def test_training_and_the_environment_run_the_encoder_eagerly(monkeypatch):
    encoder, context = _encoder_and_context()
    monkeypatch.setenv(ENV_VAR, "1")
    with compiling_now():
        embedding = compiled.compiled_forward(encoder, context, 500)
    assert embedding.requires_grad  # gradients on: the module itself, nothing compiled
    monkeypatch.setenv(ENV_VAR, "0")
    with torch.no_grad(), compiling_now():
        compiled.compiled_forward(encoder, context, 500)
    assert encoder not in compiled._kernels
