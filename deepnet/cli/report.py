"""What a run reports: the interrupted line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..distributed.launch import launched_rank
from ..errors import TrainingInterrupted
from ..training.trainer import interrupted_at


def interrupted(args: argparse.Namespace, err: TrainingInterrupted, out: Path) -> int:
    """The one line a run stopped by SIGINT or SIGTERM ends with (rank 0 says it); its exit status."""
    if launched_rank() == 0:
        if err.aborted:
            line = f"{err}; resume from the last checkpoint, if any, with: deepnet train --out {out} --resume"
        elif err.checkpoint is None:
            line = (f"interrupted ({err.signal_name}) {interrupted_at(err)}; no checkpoint written: "
                    f"{out / 'checkpoints'} holds an earlier run's checkpoints (a run keeps its work on Ctrl-C "
                    "in an --out of its own)")
        else:
            line = (f"interrupted ({err.signal_name}) {interrupted_at(err)}; checkpoint written to {err.checkpoint}; "
                    f"resume with: deepnet train --out {out} --resume")
        print(f"deepnet: {line}", file=sys.stderr, flush=True)
    args.stopped_together = not err.aborted       # every rank stopped at the same step: no abort
    return err.exit_code
