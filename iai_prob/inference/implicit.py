"""``ImplicitPredictor``: the implicit regime, an in-context predictor refined step by step.

In the implicit regime (Mittal, Mahajan, Lajoie, Pezeshki 2025, §2–3) there is no
explicit task latent: a learned predictor ``r_γ`` reads the task's data directly and
the *state is the prediction itself*,

    ŷ^{(0)} = ŷ_γ  (learned),      ŷ^{(k+1)} = ŷ^{(k)} + r_γ([x*, ŷ^{(k)}], B_k),   k = 0 … K−1,

with ``B_k`` mini-batches of the task's context ``D`` and ``x*`` the query. For
classification the state is the logits; for regression a mean and a log scale, so the
predictive ``N(μ, σ²)`` has a likelihood. One-shot (``K = 1``, ``B_0 = D``) is a
standard in-context learner (a TabPFN-/transformer-style set-to-prediction map); the
iterative version reads at most ``|B|`` points per step, so ``K`` steps cost
``O(K |B|² + K |B| Q)`` attention instead of ``O(N²)``.

``r_γ``: the mini-batch ``{[x_n, y_n]}`` is embedded and mixed by self-attention; each
query token ``[x*, ŷ^{(k)}, log N, log(k+1)]`` attends to it through ``num_blocks``
multi-head attention blocks (Set Transformer MAB, Lee et al. 2019); a head with zero
initialization gives the residual update, so an untrained predictor keeps its state.
Queries never attend to each other, so a prediction does not depend on the other
queries. Training (by :func:`~iai_prob.inference.fit`, the same loop as the guides)
splits each task into a context (training) half and a query (validation) half and
minimizes the mean over steps of the query negative log-likelihood, with
stop-gradient between steps when ``greedy``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from iai_prob.inference.checkpoint import CheckpointError, read_checkpoint, write_checkpoint
from iai_prob.inference.encoders import _MultiheadAttentionBlock
from iai_prob.inference.refinement import minibatch_schedule
from iai_prob.models.pyro_networks import mlp

__all__ = ["PREDICTIVE_LIKELIHOODS", "ImplicitPredictor"]

PREDICTIVE_LIKELIHOODS = ("gaussian", "bernoulli", "categorical")
"""Likelihoods the implicit predictor's prediction can parameterize."""
_SCALE = math.log(1024.0)


class ImplicitPredictor(nn.Module):
    """In-context predictor whose state is the prediction (see module docstring).

    :param int input_dim: features per input ``x``.
    :param str likelihood: ``"gaussian"`` (regression), ``"bernoulli"`` (labels 0/1) or
        ``"categorical"`` (integer labels ``0 … C−1``).
    :param int num_classes: ``C`` for ``"categorical"``.
    :param int hidden_dim: token width.
    :param int num_heads: attention heads.
    :param int num_blocks: query-to-context attention blocks per step.
    :param int batch_size: ``|B|``, context points read per step.
    :param int num_steps: steps per call; ``None`` = one pass over the context.
    :param int seed: seeds the mini-batch order (a call is a function of its data).
    """

    def __init__(
        self,
        input_dim: int,
        *,
        likelihood: str = "gaussian",
        num_classes: int = 2,
        hidden_dim: int = 32,
        num_heads: int = 4,
        num_blocks: int = 2,
        batch_size: int = 64,
        num_steps: int | None = None,
        seed: int = 0,
    ):
        super().__init__()
        if likelihood not in PREDICTIVE_LIKELIHOODS:
            raise ValueError(
                f"likelihood must be one of {PREDICTIVE_LIKELIHOODS}, got {likelihood!r}"
            )
        for name, value in (("input_dim", input_dim), ("batch_size", batch_size)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if num_steps is not None and (int(num_steps) != num_steps or num_steps < 1):
            raise ValueError(f"num_steps must be None or a positive integer, got {num_steps!r}")
        if likelihood == "categorical" and num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes!r}")
        self.config = {
            "input_dim": int(input_dim),
            "likelihood": likelihood,
            "num_classes": int(num_classes),
            "hidden_dim": int(hidden_dim),
            "num_heads": int(num_heads),
            "num_blocks": int(num_blocks),
            "batch_size": int(batch_size),
            "num_steps": num_steps,
            "seed": int(seed),
        }
        self.card: dict = {}
        label_dim = num_classes if likelihood == "categorical" else 1
        self.state_dim = {"gaussian": 2, "bernoulli": 1, "categorical": num_classes}[likelihood]
        self.context_embed = mlp([input_dim + label_dim, hidden_dim, hidden_dim])
        self.context_mix = _MultiheadAttentionBlock(hidden_dim, num_heads)
        self.query_embed = mlp([input_dim + self.state_dim + 2, hidden_dim, hidden_dim])
        self.blocks = nn.ModuleList(
            _MultiheadAttentionBlock(hidden_dim, num_heads) for _ in range(num_blocks)
        )
        self.head = mlp([hidden_dim, hidden_dim, self.state_dim])
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)
        self.initial = nn.Parameter(torch.zeros(self.state_dim))

    # ------------------------------------------------------------- the pieces
    def _check(self, x: torch.Tensor, y: torch.Tensor | None, what: str):
        """Batch ``x`` ``(T, N, d)`` and ``y`` ``(T, N)``; a ``ValueError`` names bad shapes."""
        if x.dim() == 2:
            x = x.unsqueeze(0)
            y = None if y is None else y.unsqueeze(0)
        if x.dim() != 3 or x.shape[-1] != self.config["input_dim"]:
            raise ValueError(
                f"{what}: expected x of shape ([T,] N, {self.config['input_dim']}), got "
                f"{tuple(x.shape)}"
            )
        if y is not None and tuple(y.shape) != tuple(x.shape[:2]):
            raise ValueError(
                f"{what}: y of shape {tuple(y.shape)} does not match x of shape {tuple(x.shape)}"
            )
        if not torch.isfinite(x).all() or (y is not None and not torch.isfinite(y.float()).all()):
            raise ValueError(f"{what}: the data contain NaN or inf values")
        return x, y

    def _label_features(self, y: torch.Tensor) -> torch.Tensor:
        if self.config["likelihood"] == "categorical":
            labels = y.long()
            if labels.min() < 0 or labels.max() >= self.config["num_classes"]:
                raise ValueError(
                    f"labels y must lie in 0 … {self.config['num_classes'] - 1}, got "
                    f"{int(labels.min())} … {int(labels.max())}"
                )
            return F.one_hot(labels, self.config["num_classes"]).to(torch.get_default_dtype())
        return y.to(torch.get_default_dtype()).unsqueeze(-1)

    def initial_state(self, x_query: torch.Tensor) -> torch.Tensor:
        """``ŷ^{(0)}``: the learned constant for every query, ``(T, Q, state_dim)``."""
        return self.initial.expand(*x_query.shape[:2], self.state_dim)

    def step(self, state, x_query, x_batch, y_batch, step: int, total_points: int):
        """``ŷ^{(k+1)} = ŷ^{(k)} + r_γ([x*, ŷ^{(k)}], B_k)`` for batched tensors."""
        tokens = self.context_embed(torch.cat([x_batch, self._label_features(y_batch)], -1))
        context = self.context_mix(tokens, tokens)
        counts = x_query.new_tensor(
            [math.log(total_points) / _SCALE, math.log(step + 1) / _SCALE]
        ).expand(*x_query.shape[:2], 2)
        hidden = self.query_embed(torch.cat([x_query, state, counts], -1))
        for block in self.blocks:
            hidden = block(hidden, context)
        return state + self.head(hidden)

    def predictive(self, state: torch.Tensor):
        """The predictive distribution of ``y*`` that a state stands for."""
        likelihood = self.config["likelihood"]
        if likelihood == "gaussian":
            return torch.distributions.Normal(state[..., 0], state[..., 1].clamp(-7, 5).exp())
        if likelihood == "bernoulli":
            return torch.distributions.Bernoulli(logits=state[..., 0])
        return torch.distributions.Categorical(logits=state)

    def negative_log_likelihood(self, state: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``−log p(y* | ŷ)`` per query, ``(T, Q)``."""
        if self.config["likelihood"] == "categorical":
            return F.cross_entropy(state.movedim(-1, 1), y.long(), reduction="none")
        return -self.predictive(state).log_prob(y.to(state.dtype))

    # ------------------------------------------------------------ refinement
    def trajectory(
        self,
        x,
        y,
        x_query,
        *,
        num_steps: int | None = None,
        batch_size: int | None = None,
        greedy: bool = False,
    ):
        """Yield ``ŷ^{(0)} … ŷ^{(K)}`` for queries ``x_query`` given the context ``(x, y)``.

        ``num_steps=1, batch_size=N`` is the one-shot in-context learner.
        """
        x, y = self._check(x, y, "context")
        x_query, _ = self._check(x_query, None, "x_query")
        if x_query.shape[0] != x.shape[0]:
            raise ValueError(
                f"x_query has {x_query.shape[0]} tasks but the context has {x.shape[0]}"
            )
        num_points = x.shape[1]
        batch_size = min(batch_size or self.config["batch_size"], num_points)
        if num_steps is None:
            num_steps = self.config["num_steps"] or math.ceil(num_points / batch_size)
        generator = torch.Generator().manual_seed(self.config["seed"])
        state = self.initial_state(x_query)
        yield state
        for k, index in enumerate(minibatch_schedule(num_points, batch_size, num_steps, generator)):
            if greedy:
                state = state.detach()
            index = index.to(x.device)
            state = self.step(state, x_query, x[:, index], y[:, index], k, num_points)
            yield state

    @torch.no_grad()
    def predict(self, x, y, x_query, **options):
        """The final state ``ŷ^{(K)}`` (``(T, Q, state_dim)``, or ``(Q, …)`` unbatched)."""
        *_, last = self.trajectory(x, y, x_query, **options)
        return last[0] if x.dim() == 2 else last

    def training_loss(self, args, *, greedy: bool, max_passes: int, generator) -> torch.Tensor:
        """Mean over steps ``k ≥ 1`` of the query NLL; the task's second half are queries.

        Called by :func:`~iai_prob.inference.fit` with a batch's ``(x, y)``.
        """
        x, y = self._check(*args[:2], "training task")
        if x.shape[1] < 2:
            raise ValueError("training tasks need at least 2 points (context and query)")
        split = math.ceil(x.shape[1] / 2)
        passes = int(torch.randint(1, max_passes + 1, (), generator=generator))
        num_steps = self.config["num_steps"] or passes * math.ceil(
            split / self.config["batch_size"]
        )
        states = self.trajectory(
            x[:, :split], y[:, :split], x[:, split:], num_steps=num_steps, greedy=greedy
        )
        next(states)  # ŷ^{(0)} does not depend on the data
        losses = [self.negative_log_likelihood(s, y[:, split:]).mean() for s in states]
        return torch.stack(losses).mean()

    # ----------------------------------------------------------- checkpoints
    def save(self, path, **card) -> None:
        """Write ``path`` (safetensors) and its JSON card, the guides' checkpoint format."""
        write_checkpoint(
            path, self.state_dict(), {"kind": "ImplicitPredictor", "config": self.config, **card}
        )

    @classmethod
    def load(cls, path, *, device=None) -> ImplicitPredictor:
        """Rebuild a predictor saved with :meth:`save`."""
        tensors, card = read_checkpoint(path, device=device)
        if card.get("kind") != "ImplicitPredictor":
            raise CheckpointError(f"{path} holds a {card.get('kind')!r}, not an ImplicitPredictor")
        predictor = cls(**card["config"])
        predictor.load_state_dict(tensors)
        if device is not None:
            predictor.to(device)
        predictor.card = card
        predictor.eval()
        return predictor
