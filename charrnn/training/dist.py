"""Data-parallel training over MPI: one model, its B streams shared out among N processes.

`mpiexec -n N charrnn train ...` (or `srun`, or a hostfile) starts N copies of the command; each
finds the others through mpi4py (`pip install 'charrnn[mpi]'`, which brings MPICH with it; a
site's own MPI works through the same code). Without an MPI launcher, or with one process, the
trainer gets `Single`, whose collectives do nothing, and mpi4py is never imported.

The protocol is simple because every process holds the whole training state:
- every rank draws the same random numbers (dropout masks, state resets) for all B streams from
  the run's seed, and keeps the carried state of all B streams, updating only its own share;
- each step, a rank computes the gradient of its streams' loss (divided by the global B x T, so
  the sum over ranks is the whole batch's mean), and one allreduce of the flat gradient buffer
  sums them; clipping and Adam then run identically everywhere;
- a small allreduce per step agrees on the loss and on whether to stop (a budget spent or a
  Ctrl-C seen on any rank), so all ranks stop after the same step;
- at an evaluation the ranks gather the carried state of every stream, so the checkpoint is the
  same whatever the number of ranks, and rank 0 evaluates, writes and reports.
"""

import os
import sys

import numpy as np

from ..errors import ConfigError, install_hint

# Environment variables by which launchers tell a process it is one of several.
SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")


def launched_by_mpi():
    """Whether a launcher started this process as one of two or more."""
    for var in SIZE_VARS:
        try:
            if int(os.environ.get(var, "1")) > 1:
                return True
        except ValueError:
            continue
    return False


def share(B, rank, size):
    """The streams (a slice of 0..B) that rank trains: contiguous, sizes differing by one."""
    bounds = np.linspace(0, B, size + 1).astype(int)
    return slice(int(bounds[rank]), int(bounds[rank + 1]))


class Single:
    """One process: the collectives are identities."""

    rank, size = 0, 1

    def sum_(self, a):
        """Sum a (a contiguous array) over the ranks, in place."""
        return a

    def agree(self, loss_sum, stop):
        """(total loss over the ranks, whether any rank wants to stop)."""
        return loss_sum, bool(stop)

    def bcast(self, obj):
        """Rank 0's obj, on every rank."""
        return obj

    def gather_streams(self, a, part):
        """a (..., B, ...) with axis 1 the streams: every rank's own `part` of it, put together."""
        return a

    def finish(self):
        """The end of a run that went well on every rank (see MPI.finish)."""

    def all_ok(self, error):
        """Every rank's error (an exception or None); raises the first one anywhere on every
        rank, so that no rank goes on to a collective the failed one will never reach."""
        if error is not None:
            raise error


class MPI:
    """Several processes under an MPI launcher, through mpi4py."""

    def __init__(self):
        try:
            from mpi4py import MPI as mpi
        except ImportError:
            raise ConfigError(
                "this process was started by an MPI launcher, but mpi4py is not "
                f"installed: {install_hint('mpi')}"
            ) from None
        self.mpi, self.comm = mpi, mpi.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.local_size = self.comm.Split_type(mpi.COMM_TYPE_SHARED).Get_size()

    def sum_(self, a):
        self.comm.Allreduce(self.mpi.IN_PLACE, a, op=self.mpi.SUM)
        return a

    def agree(self, loss_sum, stop):
        buf = np.array([loss_sum, 1.0 if stop else 0.0])
        self.comm.Allreduce(self.mpi.IN_PLACE, buf, op=self.mpi.SUM)
        return float(buf[0]), bool(buf[1] > 0)

    def bcast(self, obj):
        return self.comm.bcast(obj, root=0)

    def gather_streams(self, a, part):
        mine = np.ascontiguousarray(np.moveaxis(a[:, part], 1, 0))
        pieces = self.comm.allgather(mine)
        return np.ascontiguousarray(np.moveaxis(np.concatenate(pieces, axis=0), 0, 1))

    def finish(self):
        """Wait for every rank, then leave MPI. Without it a rank that is done would exit (the
        command ends with os._exit, which skips mpi4py's own finalisation) while rank 0 still
        writes its last checkpoint, and the launcher, seeing a rank gone unfinalised, kills
        the rest: a half-written best.npz.tmp, a lost summary line."""
        sys.stderr.flush()
        self.comm.Barrier()
        self.mpi.Finalize()

    def all_ok(self, error):
        errors = self.comm.allgather(None if error is None else (type(error), str(error)))
        for rank, e in enumerate(errors):
            if e is not None:
                if error is not None:
                    raise error
                kind, message = e
                raise kind(f"rank {rank}: {message}")


_world = None


def world():
    """This process's communicator: MPI under a launcher with two or more processes, else
    Single. Under MPI, each rank uses its share of the machine's cores unless CHARRNN_THREADS
    says otherwise."""
    global _world
    if _world is None:
        _world = MPI() if launched_by_mpi() else Single()
        if _world.size > 1 and not os.environ.get("CHARRNN_THREADS"):
            try:
                cores = len(os.sched_getaffinity(0))
            except AttributeError:
                cores = os.cpu_count() or 1
            os.environ["CHARRNN_THREADS"] = str(max(1, cores // _world.local_size))
    return _world
