"""A run's settings: the preset's defaults, those a resumed checkpoint recorded, and what a new or
resumed run says before it trains.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from dataclasses import dataclass
from typing import Any

from ..checkpoint import Checkpointer, resume_refusal, settings_differences
from ..distributed.launch import launched_rank, launched_size
from ..training.data_parallel import ranks_refusal
from .common import CLIError, say
from .options import RUN_OPTIONS, check_combinations, check_options, setting_key, typed_options


def apply_preset(args: argparse.Namespace) -> None:
    if args.preset == "seed":
        defaults = {"dataset": "mnist", "loss": "sse", "optimizer": "sgd", "lr": 0.1, "epochs": 5,
                    "batch_size": 1, "scale": "seed", "shuffle": False, "activation": "sigmoid"}
        for k, v in defaults.items():
            if getattr(args, k) is None:
                setattr(args, k, v)
    if args.preset == "seed" and args.val_fraction is None:
        args.val_fraction = 0.0
    if args.model is None:
        args.model = "mlp"
    if args.model == "resnet" and args.depth is None:
        args.depth = 20
    if args.model == "resmlp" or (args.model == "mlp" and (args.depth is not None or args.width is not None)):
        args.depth = 10 if args.depth is None else args.depth
        args.width = 64 if args.width is None else args.width
    defaults = {"dataset": "digits", "loss": "xent", "optimizer": "adam", "epochs": 20, "batch_size": 32,
                "scale": "unit", "shuffle": True, "val_fraction": 0.1, "activation": "relu",
                "dropout": 0.5 if args.model == "cnn" else 0.0,     # the Keras convnet's dropout before its dense layer
                "weight_decay": 0.0, "early_stopping": 0, "precision": "float32"}
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)


def resume_settings(args: argparse.Namespace, ckpt_dir: Path) -> dict[str, Any] | None:
    """For --resume: take the recorded settings the user did not give, refuse those given
    differently (the number of epochs may change, not below those done).  Returns what
    resume did, or None for a new run (--resume-if-exists without a checkpoint)."""
    state = Checkpointer(ckpt_dir).read_state() if ckpt_dir.is_dir() else None
    if state is None:
        if args.resume:
            raise CLIError(f"--resume: no checkpoint in {ckpt_dir} (drop --resume to start a new run, or use "
                           "--resume-if-exists)")
        say(args, f"no checkpoint in {ckpt_dir}: starting a new run")
        return None
    recorded, given = dict(state["settings"] or {}), typed_options(args)
    refusal = ranks_refusal(state["path"], int(recorded.get("ranks", 1)), launched_size())
    if refusal:
        raise CLIError(refusal)
    if state["settings"] is not None:
        # recorded only when set: a checkpoint without them was trained without them
        recorded.setdefault("--batchnorm", False)
        recorded["--sync-batchnorm"] = bool(recorded.get("sync_batchnorm", False))
    keys = {dest: setting_key(dest) for dest in (*RUN_OPTIONS, "sync_batchnorm") if setting_key(dest) in recorded}
    diffs = settings_differences({keys[d]: recorded[keys[d]] for d in keys if d in given},
                                 {keys[d]: getattr(args, d) for d in keys if d in given}, state["epochs_done"])
    if diffs:
        raise CLIError(resume_refusal(state["path"], diffs))
    saved = state["settings"] or {}
    taken = [keys[d] for d in keys if d not in given and keys[d] in saved]     # not the implied defaults
    for dest in keys:
        if dest not in given:
            setattr(args, dest, recorded[keys[dest]])
    if args.data is None and state["notes"].get("--data"):
        args.data = state["notes"]["--data"]
        taken.append("--data")
    epochs_before = recorded.get("epochs")
    if epochs_before is not None and args.epochs != epochs_before:
        say(args, f"resuming with --epochs {args.epochs} (the run was started with {epochs_before})")
    return {"checkpoint": str(state["path"]), "settings_from_checkpoint": taken, "finished": state["finished"],
            "epochs_done": state["epochs_done"], "next_batch": state["next_batch"],
            "epochs": {"recorded": epochs_before, "used": args.epochs}}


def finished_model(out: Path, resumed: dict[str, Any]) -> str:
    """Where a finished run's weights are: its model file, or, when the run stopped (Ctrl-C at
    an epoch's end, then resumed with those epochs) before writing one, its last checkpoint."""
    if (out / "model.npz").exists():
        return f"its model is {out / 'model.npz'}"
    return (f"it wrote no model file: its weights are in {resumed['checkpoint']} "
            "(deepnet evaluate and deepnet predict take it)")


def resuming_from(resumed: dict[str, Any]) -> str:
    """The line a resumed run starts with: which checkpoint, and where in the run."""
    epoch, step = resumed["epochs_done"] + 1, resumed["next_batch"]
    where = f"at epoch {epoch}, step {step}" if step else f"at the start of epoch {epoch}"
    return f"resuming from {resumed['checkpoint']} {where}"


def new_run_check(out: Path, ckpt_dir: Path, checkpointing: bool) -> bool:
    """A new run never mixes its checkpoints with an earlier run's (one stopped by Ctrl-C
    leaves one even without --checkpoint-every): with checkpoints asked for, refuse, saying how
    to go on; without, return False (the run then writes no checkpoint, even on Ctrl-C)."""
    last = Checkpointer(ckpt_dir, interrupt_only=True).last_path()
    if last is not None and not checkpointing:
        if launched_rank() == 0:
            print(f"note: {ckpt_dir} holds an earlier run's checkpoints (last: {last.name}): this new run starts "
                  f"from scratch and leaves them alone; to continue that run instead: "
                  f"deepnet train --out {out} --resume", file=sys.stderr, flush=True)
        return False
    if last is not None:
        raise CLIError(f"{ckpt_dir} holds checkpoints of an earlier run (last: {last.name}); a new run's "
                       f"checkpoints would mix with them: resume it with: deepnet train --out {out} --resume; "
                       f"or start the new run in another --out (or remove {ckpt_dir})")
    return True


@dataclass(frozen=True)
class RunPlan:
    """Where a run writes, and whether it starts anew or goes on from a checkpoint."""

    out: Path                           #: the folder of model.npz and summary.json
    resumed: dict[str, Any] | None      #: what resume did (:func:`resume_settings`); None for a new run
    checkpointing: bool                 #: checkpoints asked for (--checkpoint-every, --resume, --resume-if-exists)
    keeps_checkpoints: bool             #: False: out/checkpoints holds an earlier run's, this run writes none

    @property
    def checkpoints(self) -> Path:
        return self.out / "checkpoints"


def run_settings(args: argparse.Namespace) -> RunPlan | None:
    """The options checked, completed from a resumed run and the preset, checked in combination;
    nothing written yet.  None: the resumed run has nothing left to train (said)."""
    check_options(args)
    if launched_rank() != 0:
        args.quiet = True           # rank 0 reports for the data-parallel run
    out = Path(args.out or f"runs/{args.dataset or ('mnist' if args.preset == 'seed' else 'digits')}")
    ckpt_dir = out / "checkpoints"
    resumed = resume_settings(args, ckpt_dir) if args.resume or args.resume_if_exists else None
    apply_preset(args)
    check_combinations(args, resumed)
    if resumed is not None and (resumed["finished"] or resumed["epochs_done"] >= args.epochs):
        why = resumed["finished"] or f"all {resumed['epochs_done']} epochs are done"
        if launched_rank() == 0:
            print(f"nothing to train: the run in {out} has finished ({why}); {finished_model(out, resumed)}",
                  flush=True)
        return None
    if resumed is not None:
        say(args, resuming_from(resumed))
    checkpointing = bool(args.checkpoint_every or args.resume or args.resume_if_exists)
    keeps_checkpoints = resumed is not None or new_run_check(out, ckpt_dir, checkpointing)
    if resumed is None:
        if args.epochs == 0 and (out / "model.npz").exists():
            raise CLIError(f"--epochs 0 would replace the trained model in {out} with an untrained one "
                           "(choose another --out)")
    return RunPlan(out, resumed, checkpointing, keeps_checkpoints)
