"""``medverse_lab.training.trainer`` under two real processes (torchrun and accelerate launch, gloo
on CPU): both ranks end with the same weights, the weights a one-process run reaches,
only rank 0 writes the checkpoint, and the engine loads it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import medverse_lab as ml
from medverse_lab.training.distributed import Job, shard
from medverse_lab.training.trainer import TrainConfig, train

from conftest import free_port
from test_train import records_file

SCRIPT = Path(__file__).with_name("ddp_train_script.py")
sys.path.insert(0, str(SCRIPT.parent))
from ddp_train_script import TINY  # noqa: E402


LAUNCHERS = {
    "torchrun": lambda: [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                         "--master_port", str(free_port())],
    # --multi_gpu is accelerate's name for "torch.distributed processes"; without a GPU they run on CPU with gloo
    "accelerate": lambda: [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                           "--main_process_port", str(free_port())],
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return records_file(tmp_path_factory, 64)


@pytest.fixture(scope="module")
def one_process(data, tmp_path_factory):
    """The same run in this process: what two processes must reproduce."""
    result = train(TrainConfig(data=str(data), out=str(tmp_path_factory.mktemp("one") / "run"), **TINY),
                   progress=False)
    return result


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_two_processes_train_like_one(launcher, data, one_process, tmp_path):
    out, dump = tmp_path / "run", tmp_path / "dump"
    dump.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    done = subprocess.run([*LAUNCHERS[launcher](), str(SCRIPT), str(data), str(out), str(dump)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=SCRIPT.parents[1])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = [torch.load(dump / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys()
    for name in ranks[0]:  # DDP all-reduced every gradient: the replicas never drift apart
        assert torch.equal(ranks[0][name], ranks[1][name]), name
    histories = [json.loads((dump / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert histories[0] == histories[1] and histories[0]["processes"] == 2
    # each process took half of every batch; the loss is over the whole batch: the steps of one process
    single = one_process["model"].state_dict()
    for name, value in ranks[0].items():
        torch.testing.assert_close(value, single[name], atol=2e-4, rtol=1e-3, msg=name)
    for two, one in zip(histories[0]["history"], one_process["history"]):
        assert two["loss"] == pytest.approx(one["loss"], abs=2e-3)
    losses = [h["eval_loss"] for h in histories[0]["history"] if "eval_loss" in h]
    assert losses[-1] < losses[0]
    # rank 0 alone wrote one complete checkpoint, which the engine loads
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dump", "run"]
    saved = torch.load(out / "trainer_state.pt", weights_only=True)["model"]
    assert all(torch.equal(saved[k], ranks[0][k]) for k in saved)
    engine = ml.Engine.load(out, device="cpu")
    assert engine.model.config.medverse_mode == "dag"
    assert "2 process(es)" in (out / "README.md").read_text()


def test_each_process_takes_its_own_share_of_a_batch():
    batch = list(range(7))
    shares = [shard(batch, Job(rank, 2)) for rank in (0, 1)]
    assert shares == [[0, 2, 4, 6], [1, 3, 5]]
    assert sorted(shares[0] + shares[1]) == batch
