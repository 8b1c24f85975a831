"""Running a stage on several processes with torchrun (torch.distributed): which rank this is, and
the few collective steps the stages need. torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without
them (a plain run) everything here is a no-op and torch is not imported.

    torchrun --nproc_per_node=N -m pipeline features ...     (gloo on CPU, nccl on GPUs)
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mine(self, i: int) -> bool:
        """Whether item i of a list every rank plans the same way is this rank's: round robin, so
        every item has exactly one rank and none is padded or repeated."""
        return i % self.world == self.rank


def workers_per_rank(workers: int, ranks: Ranks) -> int:
    """DataLoader workers for --workers: -1 (automatic) gives one per spare core, at most 8, the
    cores of a machine shared among its ranks."""
    from ..core.devices import resolve_workers

    return resolve_workers(workers, int(os.environ.get("LOCAL_WORLD_SIZE", ranks.world)))


def from_env() -> Ranks:
    return Ranks(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                 int(os.environ.get("LOCAL_RANK", 0)))


def init(ranks: Ranks, device_type: str) -> None:
    """Join the process group (nccl for CUDA, gloo otherwise) and share the cores on a CPU."""
    if ranks.world == 1:
        return
    import torch
    import torch.distributed as dist

    if device_type == "cuda":
        torch.cuda.set_device(ranks.local_rank)
    else:  # ranks on one machine share its cores instead of each taking all of them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", ranks.world))))
    if not dist.is_initialized():
        # a long timeout: ranks wait at a barrier while the slowest finishes its shards
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo", timeout=timedelta(hours=24))


def barrier(ranks: Ranks) -> None:
    if ranks.world > 1:
        import torch.distributed as dist

        dist.barrier()


# set by a stage that runs several others in one process (sweep): the process group it joined once
# stays joined across them (a group destroyed and joined again under one torchrun hangs)
KEEP_GROUP = "CNNCODES_KEEP_PROCESS_GROUP"


def close(ranks: Ranks, force: bool = False) -> None:
    if ranks.world > 1 and (force or not os.environ.get(KEEP_GROUP)):
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
