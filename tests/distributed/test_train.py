"""Data-parallel meta-training: every process draws its own share of a step's tasks and
its own noise (the step's N is common), a run is reproduced by its seed on the same
number of processes, its cards record that number, and ``iai train --nproc`` runs any
model ``iai train`` takes on torchrun's processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as torch_dist

from iai_prob.cli import main
from iai_prob.inference import IterativeAmortizedGuide, fit
from iai_prob.inference.checkpoint import read_checkpoint
from iai_prob.inference.data_parallel import SINGLE_PROCESS, DataParallel
from iai_prob.inference.sources import DatasetCollection, FamilyTasks
from iai_prob.models import LinearRegression

ROOT = Path(__file__).resolve().parents[2]
SEED = 3
OPTIONS = {
    "tasks_per_step": 8,
    "num_points": (8, 16),
    "objective": "reverse_kl",
    "progress": False,
    "validation_tasks": 0,
    "seed": SEED,
}


class RecordedTasks(FamilyTasks):
    """A family's tasks, remembering every draw: ``(num_tasks, num_points, x)``."""

    def __init__(self, family):
        super().__init__(family)
        self.draws = []

    def sample(self, num_tasks, num_points, generator):
        batch = super().sample(num_tasks, num_points, generator)
        self.draws.append((num_tasks, num_points, batch.args[0]))
        return batch


@pytest.fixture
def group_of_one():
    """A gloo process group of this process alone: a ``DataParallel(rank, W)`` view then
    draws as rank ``rank`` of ``W`` does (its all-reduces see one member)."""
    torch_dist.init_process_group("gloo", store=torch_dist.HashStore(), rank=0, world_size=1)
    yield
    torch_dist.destroy_process_group()


def _guide():
    return IterativeAmortizedGuide(
        LinearRegression(dim=2), encoder="deep_sets", encoder_options={"hidden_dim": 16}
    )


def _fit(source, parallel, steps=2):
    return fit(_guide(), source, steps=steps, parallel=parallel, **OPTIONS)


def test_every_rank_draws_only_its_own_tasks_at_the_common_n(group_of_one):
    family = LinearRegression(dim=2)
    ranks = [RecordedTasks(family) for _ in range(2)]
    for rank, source in enumerate(ranks):
        _fit(source, DataParallel(rank, 2))
    single = RecordedTasks(family)
    _fit(single, SINGLE_PROCESS)
    for step in (1, 2):  # draw 0 builds the guide (validation_tasks=0: no other draws)
        (t0, n0, x0), (t1, n1, x1) = (source.draws[step] for source in ranks)
        assert t0 == t1 == 4 and n0 == n1  # half of the 8 tasks each, the same N
        assert not torch.equal(x0, x1)  # other tasks
    # one process draws as it always has: N, then the 8 tasks, from (seed, step)
    generator = torch.Generator().manual_seed(SEED * 1_000_003 + 0)
    size = int(torch.randint(8, 17, (), generator=generator))
    _, x, _ = family.sample(8, size, generator=generator)
    assert single.draws[1][:2] == (8, size) and torch.equal(single.draws[1][2], x)


def test_every_rank_draws_its_own_noise_and_repeats_it(group_of_one):
    """One dataset of 8 rows, N = 8: every task is that dataset, so the ranks' losses
    differ only by their Monte Carlo noise (and the order of the rows)."""
    x, y = LinearRegression(dim=2).sample(1, 8, generator=torch.Generator().manual_seed(1))[1:]
    data = DatasetCollection([(x[0], y[0])])
    options = {**OPTIONS, "num_points": (8, 8)}

    def losses(rank):
        parallel = DataParallel(rank, 2)
        return fit(_guide(), data, steps=3, parallel=parallel, **options).losses

    rank_0, rank_1 = losses(0), losses(1)
    assert losses(0) == rank_0  # the same seed and rank: the same run, bit for bit
    assert all(abs(a - b) > 1e-3 * abs(a) for a, b in zip(rank_0, rank_1, strict=True))


RECORDING_MODEL = textwrap.dedent(
    """
    import json
    import os

    import pyro
    import pyro.distributions as dist
    import torch


    def model(x, y=None):
        with pyro.plate("tasks", x.shape[0], dim=-2):
            w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[-1]]).to_event(1))
            with pyro.plate("data", x.shape[-2], dim=-1):
                return pyro.sample("y", dist.Normal((x * w).sum(-1), 0.5), obs=y)


    def covariates(num_tasks, num_points, generator):
        x = torch.randn(num_tasks, num_points, 2, generator=generator)
        with open(os.environ["RECORD"], "a") as record:
            draw = [os.environ.get("RANK", "none"), num_tasks, num_points, float(x.sum())]
            draw.append(os.getpid())
            record.write(json.dumps(draw) + "\\n")
        return (x,)
    """
)


def _iai_train_command(tmp_path, out, *options):
    """``iai train`` of the recording model (3 steps unless ``options`` say otherwise) and
    its environment: a fresh process, as a user runs it."""
    environment = {**os.environ, "PYTHONPATH": f"{ROOT}:{tmp_path}", "OMP_NUM_THREADS": "1"}
    environment["RECORD"] = str(tmp_path / f"{out}.jsonl")
    argv = ["train", "recording:model", "--covariates", "recording:covariates"]
    argv += ["--steps", "3", "--tasks-per-step", "8", "--min-points", "8", "--max-points", "16"]
    argv += ["--encoder", "deep_sets", "--objective", "reverse_kl", "--no-progress"]
    command = [sys.executable, "-m", "iai_prob.cli", *argv, "--out", str(tmp_path / out)]
    return [*command, *options], environment


def _draws(tmp_path, out):
    return [json.loads(line) for line in (tmp_path / f"{out}.jsonl").read_text().splitlines()]


def _iai_train(tmp_path, out, *options):
    """Run :func:`_iai_train_command` to its end; its result and its recorded draws."""
    command, environment = _iai_train_command(tmp_path, out, *options)
    completed = subprocess.run(
        command, env=environment, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    return completed, _draws(tmp_path, out)


def _last_weights(folder):
    tensors, card = read_checkpoint(folder / "last")
    return {k: v for k, v in tensors.items() if not k.startswith("best.")}, card


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--nproc", "3"], "--tasks-per-step 8 must be divisible by --nproc 3"),
        (["--nproc", "0"], "--nproc must be a positive integer"),
        (["--encoder-options", "[16]"], "encoder_options must be a dict"),
        (["--encoder-options", '{"a": 1, "a": 2}'], "--encoder-options names 'a' more than once"),
    ],
)
def test_bad_process_options_are_one_line_before_any_process_starts(
    tmp_path, capsys, options, message
):
    argv = ["train", "linear_regression", "--tasks-per-step", "8", "--out", str(tmp_path / "o")]
    assert main([*argv, *options]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_nproc_under_torchrun_must_be_its_world_size(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    argv = ["train", "linear_regression", "--nproc", "2", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    assert "--nproc 2 but torchrun started 4 process(es)" in capsys.readouterr().err


@pytest.mark.parametrize(("rank", "world_size", "tasks"), [(2, 2, 8), (-1, 2, 8), (0, 3, 8)])
def test_bad_process_layouts_are_named(rank, world_size, tasks):
    with pytest.raises(ValueError, match=r"rank|divisible"):
        DataParallel(rank, world_size).local_tasks(tasks)


def test_each_process_draws_its_share_of_the_global_batch():
    assert [DataParallel(rank, 4).local_tasks(32) for rank in range(4)] == [8] * 4
    assert SINGLE_PROCESS.local_tasks(32) == 32


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _two_nodes(tmp_path, steps: int) -> list[subprocess.CompletedProcess]:
    """The documented multi-node line run as two "nodes" on this machine: two torchrun
    launchers of one process each, meeting at a rendezvous on the loopback interface, each
    with an --out of its own (no shared filesystem)."""
    port = _free_port()
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    launchers = []
    for node in (0, 1):
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2"]
        command += ["--node-rank", str(node), "--nproc-per-node", "1"]
        command += ["--master-addr", "127.0.0.1", "--master-port", str(port)]
        command += ["-m", "iai_prob.cli", "--", "train", "linear_regression", "--config"]
        command += ['{"dim": 2}', "--encoder", "deep_sets", "--steps", str(steps)]
        command += ["--tasks-per-step", "8", "--min-points", "8", "--max-points", "16"]
        command += ["--no-progress", "--out", str(tmp_path / f"node{node}")]
        launchers.append(
            subprocess.Popen(
                command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    finished = []
    for launcher in launchers:
        stdout, stderr = launcher.communicate(timeout=300)
        finished.append(
            subprocess.CompletedProcess(launcher.args, launcher.returncode, stdout, stderr)
        )
    return finished


@pytest.mark.slow
def test_two_nodes_train_as_one_run_and_a_resume_they_cannot_share_is_refused(tmp_path):
    node_0, node_1 = _two_nodes(tmp_path, steps=3)
    assert node_0.returncode == 0 and node_1.returncode == 0, node_0.stderr[-3000:]
    assert "trained 3 steps on 2 processes" in node_0.stdout and node_1.stdout == ""
    assert json.loads((tmp_path / "node0" / "last.json").read_text())["world_size"] == 2
    assert not (tmp_path / "node1").exists()  # rank 0 writes; node 1 holds nothing

    # node 1 cannot see node 0's checkpoint: both refuse in one line instead of diverging
    resumed = _two_nodes(tmp_path, steps=5)
    for launcher in resumed:
        assert launcher.returncode != 0
        assert "disagree on the step to resume from" in launcher.stderr
        assert "from 0 to 3" in launcher.stderr
    assert json.loads((tmp_path / "node0" / "last.json").read_text())["step"] == 3


@pytest.mark.slow
def test_two_processes_reproduce_their_run_through_a_killed_rank_and_record_it(tmp_path):
    """Issue 23.3, 23.5 and 23.7 through ``iai train --nproc 2`` on a ``module:function``
    model whose covariates record every draw: each process simulates only its 4 tasks a
    step; rank 1 killed by pid (SIGKILL) after the step-3 checkpoint ends the run, and the
    same command run again resumes and ends with the weights of a run never killed, bit
    for bit; the cards say 2 processes, and resuming on one says what changes."""
    (tmp_path / "recording.py").write_text(RECORDING_MODEL)
    options = ["--steps", "12", "--checkpoint-every", "3", "--nproc", "2"]
    reference, draws = _iai_train(tmp_path, "reference", *options)
    assert reference.returncode == 0, reference.stderr[-3000:]
    assert "trained 12 steps on 2 processes" in reference.stdout
    steps = [d for d in draws if d[1] == 4]  # the build's draw is one task
    assert sorted(d[0] for d in steps) == ["0"] * 12 + ["1"] * 12  # each rank its 4 tasks
    by_rank = {rank: [d for d in steps if d[0] == rank] for rank in ("0", "1")}
    for step_0, step_1 in zip(by_rank["0"], by_rank["1"], strict=True):
        assert step_0[2] == step_1[2] and step_0[3] != step_1[3]  # the same N, other tasks

    command, environment = _iai_train_command(tmp_path, "killed", *options)
    launcher = subprocess.Popen(
        command,
        env=environment,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    state = tmp_path / "killed" / "last.json"
    deadline = time.monotonic() + 120
    while not (state.exists() and json.loads(state.read_text())["step"] >= 3):
        assert launcher.poll() is None and time.monotonic() < deadline, "no checkpoint came"
        time.sleep(0.005)
    rank_1 = next(d[4] for d in _draws(tmp_path, "killed") if d[0] == "1")
    os.kill(rank_1, signal.SIGKILL)
    assert launcher.wait(timeout=120) != 0
    killed_at = json.loads(state.read_text())["step"]
    assert 3 <= killed_at < 12  # killed mid-run

    resumed, _ = _iai_train(tmp_path, "killed", *options)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (expected, card), (got, _) = (_last_weights(tmp_path / n) for n in ("reference", "killed"))
    assert card["step"] == 12 and expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    guide_card = json.loads((tmp_path / "reference" / "guide.json").read_text())
    assert card["world_size"] == 2 and guide_card["budget"]["world_size"] == 2
    assert "--nproc 2" in guide_card["command"]

    one = _iai_train(tmp_path, "reference", "--steps", "13", "--checkpoint-every", "3")[0]
    assert one.returncode == 0, one.stderr[-3000:]
    assert "resuming a run trained on 2 process(es) up to step 12 on 1" in one.stderr
    assert _last_weights(tmp_path / "reference")[1]["world_size"] == 1


def _update(parallel, seed: int) -> torch.Tensor:
    """The weights' change of one reverse-KL step of SGD at learning rate 1 from the same
    initial weights (minus the gradient this process applies), flattened."""
    torch.manual_seed(0)
    guide = _guide()
    x, y = LinearRegression(dim=2).sample(1, 8, generator=torch.Generator().manual_seed(0))[1:]
    guide._setup_prototype(x[0], y[0])
    before = torch.cat([p.detach().reshape(-1) for p in guide.refiner.parameters()])
    sgd = torch.optim.SGD(guide.refiner.parameters(), lr=1.0)
    options = {**OPTIONS, "seed": seed, "clip_norm": 1e12}
    fit(guide, LinearRegression(dim=2), steps=1, parallel=parallel, optimizer=sgd, **options)
    return torch.cat([p.detach().reshape(-1) for p in guide.refiner.parameters()]) - before


@pytest.mark.slow
def test_two_processes_estimate_the_one_process_update(group_of_one):
    """Issue 23.7, reverse KL on 2 processes against 1 by their statistics: over 48 seeds,
    the update of a step on 2 processes (4 tasks each, their own noise; rank 0's and rank
    1's halves summed, as the all-reduce does) and on one process (8 tasks) have the same
    mean and spread (median absolute deviation: the updates are heavy-tailed) along a
    fixed direction."""
    direction = None
    two, one = [], []
    for seed in range(48):
        halves = _update(DataParallel(0, 2), seed) + _update(DataParallel(1, 2), seed)
        whole = _update(SINGLE_PROCESS, seed)
        if direction is None:
            direction = torch.randn(whole.shape, generator=torch.Generator().manual_seed(0))
        two.append(float(halves @ direction))
        one.append(float(whole @ direction))
    two, one = torch.tensor(two), torch.tensor(one)
    error = (two.var() / len(two) + one.var() / len(one)).sqrt()
    assert abs(two.mean() - one.mean()) < 3 * error

    def spread(values):
        return (values - values.median()).abs().median()

    assert 0.5 < float(spread(two) / spread(one)) < 2.0
