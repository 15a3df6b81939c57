"""``deepnet evaluate``: a model on the test rows held out from its training."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..backend import to_device, to_host
from ..datasets import load_dataset
from ..datasets.registry import dataset_key
from ..io import load_network
from ..metrics import confusion_matrix, per_class_accuracy
from .common import CLIError, json_default, model_inputs
from .options import typed_options


def _checkpoint_record(ckpt: dict[str, Any] | None) -> dict[str, Any] | None:
    """The split of a checkpoint written before it noted one, from its recorded command-line
    settings (no digest of the rows: not checked); None if the command line did not write it."""
    settings = (ckpt or {}).get("settings") or {}
    if "--dataset" not in settings:
        return None
    name, seed = settings["--dataset"], settings.get("--seed", 0)
    return {"dataset": name, "data": ckpt["notes"].get("--data"), "label_column": settings.get("--label-column"),
            "scale": settings.get("--scale", "unit"), "seed": seed,
            "test": None if name in ("mnist", "fashion-mnist", "idx", "npz") else {"seed": seed}}


def _test_rows(split: dict[str, Any] | None, n_test: int) -> str:
    """The test rows in words: the data set's own test set, or a seeded split."""
    if split is None:
        return f"the data set's own test set ({n_test:,} rows)"
    if "rows" not in split:
        return f"the test split of seed {split['seed']} ({n_test:,} rows)"
    return f"the test split of seed {split['seed']} ({n_test:,} rows: {split['test_fraction']:.0%} of {split['rows']:,})"


def _split_differences(record: dict[str, Any], data: Any) -> list[str]:
    """What differs between the recorded test rows and those loaded now ([] if none, or if the
    record is an older checkpoint's settings, which hold no digest to check)."""
    if "test_sha256" not in record:
        return []
    was, now = record.get("test"), data.split
    if (was is None) != (now is None):
        return [f"its test rows are now {_test_rows(now, len(data.y_test))}, when the model was trained "
                f"{_test_rows(was, record.get('test_rows', 0))}"]
    if was and "rows" in was and now["rows"] != was["rows"]:
        return [f"it has {now['rows']:,} rows now, {was['rows']:,} when the model was trained"]
    if record["test_rows"] != len(data.y_test):
        return [f"{len(data.y_test):,} test rows now, {record['test_rows']:,} when the model was trained"]
    if record["test_sha256"] != data.test_digest():
        return [f"its held-out rows are not those recorded (SHA-256 {data.test_digest()[:16]}... now, "
                f"{record['test_sha256'][:16]}... recorded)"]
    return []


def _unrecorded_data(args: argparse.Namespace, meta: dict[str, Any]) -> tuple[Any, str]:
    """Data for a model that does not record its split (Python API, older deepnet): as asked,
    saying plainly which rows are used and what that means."""
    name = args.dataset or meta.get("dataset") or "digits"
    data = load_dataset(name, args.data, scale=meta.get("scale", "unit") if name == meta.get("dataset") else "unit",
                        download=not args.no_download, label_column=args.label_column, seed=args.seed)
    hint = " (pass the --seed it was trained with)" if data.split is not None else ""
    return data, (f"{_test_rows(data.split, len(data.y_test))}; the model file does not record how its "
                  f"training data was split (saved by the Python API or an older deepnet): if it trained on "
                  f"any of these rows, this is not a held-out accuracy{hint}")


def _recorded_data(args: argparse.Namespace, record: dict[str, Any]) -> tuple[Any, str]:
    """The test rows the record names (``--data``, ``--dataset``, ``--label-column`` override the
    source); refuses a ``--seed`` or a changed source that would evaluate on other rows."""
    given = typed_options(args)
    name = dataset_key(args.dataset or record["dataset"])
    if name != record["dataset"]:
        data = load_dataset(name, args.data, download=not args.no_download, label_column=args.label_column,
                            seed=args.seed)
        return data, (f"{_test_rows(data.split, len(data.y_test))} of --dataset {name} (the model was trained "
                      f"on {record['dataset']})")
    where = record["data"]
    same = args.data is None or (where is not None and Path(args.data).resolve() == Path(where).resolve())
    source = f"{where}" if where else f"the {name} data"
    split, seed = record.get("test"), _split_seed(args, record, same, source)
    if args.data is None and where is not None and not Path(where).exists():
        raise CLIError(f"{args.model} was trained on {where}, which is not there any more: "
                       "pass --data with its new place")
    data = load_dataset(name, args.data if args.data is not None else where, scale=record.get("scale") or "unit",
                        download=not args.no_download,
                        label_column=args.label_column if "label_column" in given else record.get("label_column")
                        or "label", seed=seed, test_fraction=(split or {}).get("test_fraction", 0.2))
    return data, _which_rows(args, record, data, same, source)


def _split_seed(args: argparse.Namespace, record: dict[str, Any], same: bool, source: str) -> int:
    """The seed of the test split: the recorded one; a different --seed only for other data
    (on the same data its test split would hold rows the model trained on)."""
    seed = record["seed"]
    if "seed" in typed_options(args) and args.seed != seed and record.get("test") is not None:
        if same:
            raise CLIError(f"--seed {args.seed}: {args.model} was trained with --seed {seed}, which held out other "
                           f"rows of {source}; the test split of seed {args.seed} holds rows it trained on "
                           "(drop --seed to evaluate on its held-out rows)")
        seed = args.seed
    return seed


def _which_rows(args: argparse.Namespace, record: dict[str, Any], data: Any, same: bool, source: str) -> str:
    """The test rows in words, and whether they are those held out from training (checked
    against the record's digest; refused on the same data when they are not)."""
    rows = _test_rows(data.split if record.get("test") is not None else None, len(data.y_test))
    checked = "test_sha256" in record
    if same:
        diffs = _split_differences(record, data)
        if diffs:
            raise CLIError(f"cannot evaluate {args.model} on the rows held out from its training: {source} changed "
                           f"since: {'; '.join(diffs)} (restore it, or pass --data FILE to evaluate on other data)")
        return (f"{rows}, the rows held out when the model was trained"
                + (" (checked)" if checked else " (an older checkpoint: not checked)"))
    if checked and record["test_sha256"] == data.test_digest():
        return f"{rows} of --data {args.data}: the rows held out when the model was trained (checked)"
    return (f"{rows} of --data {args.data}, not the data the model was trained on ({source}): "
            "if it trained on any of these rows, this is not a held-out accuracy")


def _model_and_data(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """The model (a model file or a checkpoint), its test data, and which rows those are in words."""
    net = load_network(args.model, backend=args.backend)
    meta = net.metadata
    record = meta.get("split") or _checkpoint_record(meta.get("checkpoint"))
    data, rows = _recorded_data(args, record) if record else _unrecorded_data(args, meta)
    if net.input_width is not None and data.n_features != net.input_width:
        raise CLIError(f"the model takes {net.input_width} inputs but {data.name} has {data.n_features} features")
    return net, data, rows


def _checkpoint_point(ckpt: dict[str, Any]) -> str:
    """Where in its run a checkpoint was written: "after epoch 2", or "at epoch 3, after its step 40"."""
    if ckpt.get("next_batch"):
        return f"at epoch {ckpt['epoch'] + 1}, after its step {ckpt['next_batch']}"
    return f"after epoch {ckpt['epoch']}"


def cmd_evaluate(args: argparse.Namespace) -> int:
    net, data, rows = _model_and_data(args)
    ops = net.ops
    X_test = model_inputs(net, data.X_test, data.image_shape)
    res = net.evaluate(X_test, data.y_test)
    pred = net.predict_classes(X_test)
    k = net.output_width
    conf_d = confusion_matrix(ops, to_device(data.y_test, ops, "int64"), to_device(pred, ops, "int64"), k)
    conf, per = to_host(conf_d), to_host(per_class_accuracy(ops, conf_d))
    names = data.class_names or [str(i) for i in range(k)]
    ckpt = net.metadata.get("checkpoint")
    what = f"checkpoint {args.model} ({_checkpoint_point(ckpt)})" if ckpt else f"model {args.model}"
    loss = f"loss {res['loss']:.4f}" if net.loss is not None else "no loss (the file records none)"
    print(f"{what} on {data.description}")
    print(f"accuracy {100 * res['accuracy']:.2f}%  {loss}  ({len(data.y_test):,} samples)")
    print(f"test rows: {rows}")
    print("per-class accuracy:")
    for i in range(k):
        print(f"  {names[i]:>12s}  {100 * per[i]:6.2f}%  ({int(conf[i].sum())} samples)")
    width = max(5, len(str(int(conf.max()))) + 1)
    print("confusion matrix (rows: true, columns: predicted):")
    print(" " * 6 + "".join(f"{i:>{width}d}" for i in range(k)))
    for i in range(k):
        print(f"{i:>5d} " + "".join(f"{int(c):>{width}d}" for c in conf[i]))
    if args.json:
        Path(args.json).write_text(json.dumps({"accuracy": res["accuracy"],
                                               "loss": res["loss"] if net.loss is not None else None,
                                               "test_rows": rows, "samples": len(data.y_test),
                                               "per_class_accuracy": per.tolist(), "confusion_matrix": conf.tolist()},
                                              indent=2, default=json_default))
    return 0
