"""Launched by tests/test_train_distributed.py under torchrun or accelerate launch: train
the tiny test model with ``medverse_lab.training.trainer`` and write this rank's weights and history,
so that the test can compare the ranks with each other and with a one-process run.

    python tests/ddp_train_script.py DATA OUT DUMP
"""

import json
import sys
from pathlib import Path

import torch

from medverse_lab.training.trainer import TrainConfig, train

TINY = dict(vocab_size=300, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64,
            steps=6, batch_size=4, eval_every=3, save_every=6, lr=1e-2, warmup=2, device="cpu")


def main(data: str, out: str, dump: str) -> None:
    result = train(TrainConfig(data=data, out=out, **TINY), progress=False)
    rank = result["rank"]
    torch.save(result["model"].state_dict(), Path(dump) / f"rank{rank}.pt")
    (Path(dump) / f"rank{rank}.json").write_text(json.dumps({k: result[k] for k in ("history", "processes")}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
