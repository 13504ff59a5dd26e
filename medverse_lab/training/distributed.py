"""Several training processes (``torchrun``, ``accelerate launch``): the few collective
operations ``medverse_lab.training.trainer`` needs, and no-ops in a single process.

Launchers describe the job in environment variables (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``); the process group is joined from them,
with NCCL on CUDA and gloo on CPU.

Why not accelerate's ``PartialState``: it is not the same thing here. Its
``split_between_processes`` gives each rank a contiguous slice, while :func:`shard` takes
every ``world``-th item (so a global batch split over N processes holds the same examples
in the same micro-batches as one process takes them, which the two-process test compares);
it joins the group once per interpreter with its own backend choice, where :func:`join`
picks gloo or NCCL by the device and :func:`leave` undoes it; and it would make accelerate
a core dependency (today a test extra). The collectives themselves are torch.distributed's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class Job:
    """Where this process stands: ``rank`` of ``world`` processes, ``local_rank`` on its machine."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def job_from_env() -> Job:
    """The job the launcher described, or a single process when there is none."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return Job(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def join(device_type: str) -> tuple[Job, bool]:
    """Join the launcher's process group (once); returns ``(job, joined_here)`` so that the
    caller that joined also leaves (:func:`leave`)."""
    job = job_from_env()
    if not job.distributed or dist.is_initialized():
        return job, False
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(job.local_rank)
    dist.init_process_group(backend=backend, rank=job.rank, world_size=job.world)
    return job, True


def leave(joined_here: bool) -> None:
    if joined_here and dist.is_initialized():
        dist.destroy_process_group()


def barrier(job: Job) -> None:
    if job.distributed:
        dist.barrier()


def all_sum(job: Job, *values: float) -> list[float]:
    """The sums of ``values`` over all processes (the values themselves in one process)."""
    if not job.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return t.tolist()


def from_main(job: Job, obj: T) -> T:
    """Rank 0's ``obj`` on every process (pickled), e.g. a tokenizer rank 0 trained."""
    if not job.distributed:
        return obj
    box = [obj if job.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shard(items: Sequence[T], job: Job) -> list[T]:
    """This process's share of a global batch: every ``world``-th item from ``rank``."""
    return list(items[job.rank::job.world])


__all__ = ["Job", "job_from_env", "join", "leave", "barrier", "all_sum", "from_main", "shard"]
