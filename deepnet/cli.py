"""The ``deepnet`` command: train, evaluate, predict, info.

Errors are printed as one or two readable lines with a non-zero exit status; pass
``--debug`` for the full traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

EXIT_ERROR = 1


class CLIError(Exception):
    """A user-facing error: printed without a traceback."""


def _known_errors() -> tuple[type[BaseException], ...]:
    from .backend import BackendError
    from .datasets import DatasetError
    from .io import ModelFileError
    from .layers.base import ShapeError
    from .network import NonFiniteError
    from .plotting import PlotUnavailable

    return (CLIError, BackendError, DatasetError, ModelFileError, ShapeError, NonFiniteError, PlotUnavailable,
            ValueError, KeyError, FileNotFoundError, PermissionError, IsADirectoryError)


def _say(args: argparse.Namespace, msg: str) -> None:
    if not getattr(args, "quiet", False):
        print(msg, flush=True)


# ---------------------------------------------------------------- train
def _build_network(args: argparse.Namespace, n_in: int, n_classes: int) -> Any:
    import deepnet as dn
    from .presets import mlp_layers, parse_spec, seed_layers

    if args.preset == "seed":
        if n_in != 784 or n_classes != 10:
            raise CLIError(f"--preset seed is 784-50-10 but the data has {n_in} features and {n_classes} classes")
        return dn.Network(seed_layers(args.shortcut), seed=args.seed, backend=args.backend)
    spec = args.layers or f"{n_in}-128-{n_classes}"
    sizes = parse_spec(spec)
    if sizes[0] != n_in:
        raise CLIError(f"--layers {spec}: the data has {n_in} features, so the first size must be {n_in}")
    if sizes[-1] != n_classes:
        raise CLIError(f"--layers {spec}: the data has {n_classes} classes, so the last size must be {n_classes}")
    hidden = None
    if args.dropout:
        from .layers import Dropout

        def hidden(width: int) -> list[Any]:
            return [Dropout(args.dropout)]
    out_act = "sigmoid" if args.loss in ("sse", "mse") else None
    return dn.Network(mlp_layers(sizes, args.activation, output_activation=out_act, hidden=hidden),
                      seed=args.seed, backend=args.backend)


def _optimizer(args: argparse.Namespace) -> Any:
    from .optimizers import get_optimizer

    kw: dict[str, Any] = {"lr": args.lr} if args.lr is not None else {}
    if args.weight_decay:
        kw["weight_decay"] = args.weight_decay
    if args.clip_norm:
        kw["clip_norm"] = args.clip_norm
    if args.max_norm:
        kw["max_norm"] = args.max_norm
    if args.optimizer in ("sgd", "momentum") and args.momentum is not None:
        kw["momentum"] = args.momentum
    return get_optimizer(args.optimizer, **kw)


def _apply_preset(args: argparse.Namespace) -> None:
    if args.preset == "seed":
        defaults = {"dataset": "mnist", "loss": "sse", "optimizer": "sgd", "lr": 0.1, "epochs": 5,
                    "batch_size": 1, "scale": "seed", "shuffle": False}
        for k, v in defaults.items():
            if getattr(args, k) is None:
                setattr(args, k, v)
    if args.preset == "seed" and args.val_fraction is None:
        args.val_fraction = 0.0
    defaults = {"dataset": "digits", "loss": "xent", "optimizer": "adam", "epochs": 20, "batch_size": 32,
                "scale": "unit", "shuffle": True, "val_fraction": 0.1}
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)


def cmd_train(args: argparse.Namespace) -> int:
    import deepnet as dn
    from .backend import get_ops
    from .datasets import load_dataset
    from .io import save_model
    from .metrics import confusion_matrix
    from .progress import ProgressBar

    _apply_preset(args)
    if args.plot:
        from .plotting import _pyplot

        _pyplot()  # fail early with a clear message if matplotlib is missing
    get_ops(args.backend or dn.get_backend())
    data = load_dataset(args.dataset, args.data, scale=args.scale, download=not args.no_download,
                        label_column=args.label_column, seed=args.seed, log=lambda m: _say(args, m))
    _say(args, f"data: {data.description}; inputs scaled '{data.scaling}'")
    if data.name == "digits":
        _say(args, "      (the offline default; for MNIST run: deepnet train --dataset mnist [--data DIR], "
                   "or the notebook's network: deepnet train --preset seed --data DIR)")
    net = _build_network(args, data.n_features, data.n_classes)
    loss = {"sse": dn.SumOfSquares(on=0.99, off=0.01), "mse": dn.MeanSquaredError(),
            "xent": dn.SoftmaxCrossEntropy()}[args.loss]
    opt = _optimizer(args)
    if args.diagnostics:
        from .diagnostics import GradientFlow

        net.diagnostics = GradientFlow()
    _say(args, net.summary())
    _say(args, f"loss {loss!r}, optimizer {opt!r}, {args.epochs} epochs, batch {args.batch_size}, "
               f"backend {net.ops.name}, seed {args.seed}")

    X, y = data.X_train, data.y_train
    val = None
    if args.val_fraction:
        (X, y), val = data.validation_split(args.val_fraction, args.seed)
    out = Path(args.out or f"runs/{data.name}")
    out.mkdir(parents=True, exist_ok=True)
    callbacks: list[Any] = [ProgressBar(len(X), args.epochs, quiet=args.quiet)]
    if args.early_stopping:
        callbacks.append(dn.EarlyStopping("val_loss" if val else "loss", patience=args.early_stopping))
    if args.schedule:
        from .schedules import LearningRateScheduler, get_schedule

        callbacks.append(LearningRateScheduler(get_schedule(args.schedule, opt.lr, args.epochs)))
    checkpoint = None
    if args.checkpoint_every or args.resume:
        from .checkpoint import Checkpointer

        checkpoint = Checkpointer(out / "checkpoints", every_steps=args.checkpoint_every)

    class EpochLine(dn.Callback):
        def on_epoch_end(self, net: Any, epoch: int, logs: dict[str, Any]) -> None:
            extra = "".join(f"  {k} {logs[k]:.4f}" for k in ("val_loss", "val_accuracy") if k in logs)
            _say(args, f"epoch {epoch + 1}/{args.epochs}  loss {logs['loss']:.4f}  accuracy {logs['accuracy']:.4f}"
                       f"{extra}  ({logs['time']:.1f}s, {len(X) / max(logs['time'], 1e-9):,.0f} samples/s)")

    callbacks.append(EpochLine())
    t0 = time.perf_counter()
    hist = net.fit(X, y, epochs=args.epochs, batch_size=args.batch_size, loss=loss, optimizer=opt,
                   shuffle=args.shuffle, validation_data=val, callbacks=callbacks,
                   checkpoint=checkpoint, resume=args.resume)
    train_time = time.perf_counter() - t0
    test = net.evaluate(data.X_test, data.y_test)
    pred = net.predict_classes(data.X_test)
    ops = net.ops
    conf = dn.to_host(confusion_matrix(ops, dn.to_device(data.y_test, ops, "int64"),
                                       dn.to_device(pred, ops, "int64"), data.n_classes))
    extra = {"dataset": data.name, "scale": data.scaling, "image_shape": data.image_shape,
             "class_names": data.class_names, "n_features": data.n_features}
    model_path = save_model(net, out / "model.npz", extra=extra)
    summary = {
        "config": {k: v for k, v in vars(args).items() if k != "func"},
        "data": data.description, "backend": net.ops.name, "model": str(model_path),
        "history": hist.history, "train_seconds": train_time,
        "epoch_seconds": hist.history.get("time", []),
        "test": {"accuracy": test["accuracy"], "loss": test["loss"], "confusion_matrix": conf.tolist()},
        "versions": _versions(),
    }
    if args.plot:
        from .plotting import plot_confusion, plot_curves, plot_gradient_flow, plot_misclassified

        pdir = Path(args.plot)
        pdir.mkdir(parents=True, exist_ok=True)
        files = [plot_curves(hist.history, pdir / "curves.png"),
                 plot_confusion(conf, pdir / "confusion.png", data.class_names)]
        if data.image_shape:
            files.append(plot_misclassified(data.X_test, data.y_test, pred, data.image_shape,
                                            pdir / "misclassified.png", data.class_names))
        if net.diagnostics is not None:
            files.append(plot_gradient_flow(net.diagnostics.records(), pdir / "gradient_flow.png"))
        summary["plots"] = [str(f) for f in files]
    if net.diagnostics is not None:
        summary["gradient_flow"] = net.diagnostics.records()
        for warning in net.diagnostics.warnings():
            _say(args, f"warning: {warning}")
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default))
    print(f"test accuracy {100 * test['accuracy']:.2f}% on {len(data.y_test):,} {data.name} test samples "
          f"(train {train_time:.1f}s); model {model_path}, summary {out / 'summary.json'}"
          + (f", plots in {args.plot}" if args.plot else ""), flush=True)
    return 0


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    return repr(o)


# ---------------------------------------------------------------- evaluate / predict
def _model_and_data(args: argparse.Namespace) -> tuple[Any, Any]:
    from .datasets import load_dataset
    from .io import load_model

    net = load_model(args.model, backend=args.backend)
    meta = getattr(net, "metadata", {})
    name = args.dataset or meta.get("dataset") or "digits"
    data = load_dataset(name, args.data, scale=meta.get("scale", "unit") if name == meta.get("dataset") else "unit",
                        download=not args.no_download, label_column=args.label_column, seed=args.seed)
    if data.n_features != net.input_width:
        raise CLIError(f"the model takes {net.input_width} inputs but {data.name} has {data.n_features} features")
    return net, data


def cmd_evaluate(args: argparse.Namespace) -> int:
    import deepnet as dn
    from .metrics import confusion_matrix, per_class_accuracy

    net, data = _model_and_data(args)
    ops = net.ops
    res = net.evaluate(data.X_test, data.y_test)
    pred = net.predict_classes(data.X_test)
    k = net.output_width
    conf_d = confusion_matrix(ops, dn.to_device(data.y_test, ops, "int64"), dn.to_device(pred, ops, "int64"), k)
    conf, per = dn.to_host(conf_d), dn.to_host(per_class_accuracy(ops, conf_d))
    names = data.class_names or [str(i) for i in range(k)]
    print(f"model {args.model} on {data.description}")
    print(f"accuracy {100 * res['accuracy']:.2f}%  loss {res['loss']:.4f}  ({len(data.y_test):,} samples)")
    print("per-class accuracy:")
    for i in range(k):
        print(f"  {names[i]:>12s}  {100 * per[i]:6.2f}%  ({int(conf[i].sum())} samples)")
    width = max(5, len(str(int(conf.max()))) + 1)
    print("confusion matrix (rows: true, columns: predicted):")
    print(" " * 6 + "".join(f"{i:>{width}d}" for i in range(k)))
    for i in range(k):
        print(f"{i:>5d} " + "".join(f"{int(c):>{width}d}" for c in conf[i]))
    if args.json:
        Path(args.json).write_text(json.dumps({"accuracy": res["accuracy"], "loss": res["loss"],
                                               "per_class_accuracy": per.tolist(), "confusion_matrix": conf.tolist()},
                                              indent=2, default=_json_default))
    return 0


def _read_inputs(path: Path, n_features: int, scale: str, image_shape: Any) -> np.ndarray:
    from .datasets.mnist import scale_pixels

    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    if not path.exists():
        raise CLIError(f"{path}: file not found")
    if suffix in (".png", ".jpg", ".jpeg", ".bmp"):
        try:
            from matplotlib.image import imread
        except ImportError:
            raise CLIError("reading images needs matplotlib: pip install 'deepnet[plot]'") from None
        img = np.asarray(imread(path), dtype=np.float64)
        if img.ndim == 3:
            img = img[..., :3].mean(axis=2)
        if img.max() <= 1.0:
            img = img * 255.0
        if image_shape and tuple(img.shape) != tuple(image_shape):
            raise CLIError(f"{path}: image is {img.shape[1]}x{img.shape[0]} pixels, the model expects "
                           f"{image_shape[1]}x{image_shape[0]} grayscale")
        raw = img.reshape(1, -1)
    elif suffix == ".npy":
        raw = np.load(path, allow_pickle=False)
        raw = raw.reshape(raw.shape[0], -1) if raw.ndim > 1 else raw.reshape(1, -1)
    else:
        from .datasets.tabular import _read_text, parse_csv

        text = _read_text(path)
        first = next((line for line in text.splitlines() if line.strip()), "")
        width = len(first.split(","))
        if width == n_features + 1:
            raw, _, _ = parse_csv(text, path, label_column=0, header=False)
        elif width == n_features:
            rows = [r.split(",") for r in text.splitlines() if r.strip()]
            try:
                raw = np.array(rows, dtype=np.float64)
            except ValueError:
                raise CLIError(f"{path}: rows must be {n_features} numbers") from None
        else:
            raise CLIError(f"{path}: rows have {width} columns; the model expects {n_features} values "
                           f"(or a label and {n_features} values)")
    if raw.shape[1] != n_features:
        raise CLIError(f"{path}: inputs have {raw.shape[1]} values each, the model expects {n_features}")
    if scale in ("unit", "seed") and raw.max() > 1.5:
        return scale_pixels(np.clip(raw, 0, 255), scale)
    return raw.astype(np.float32)


def cmd_predict(args: argparse.Namespace) -> int:
    from .io import load_model

    net = load_model(args.model, backend=args.backend)
    meta = getattr(net, "metadata", {})
    X = _read_inputs(Path(args.input), net.input_width, meta.get("scale", "unit"), meta.get("image_shape"))
    scores = net.predict(X)
    names = meta.get("class_names") or [str(i) for i in range(net.output_width)]
    z = scores - scores.max(axis=1, keepdims=True)
    prob = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    for i, row in enumerate(prob):
        k = int(row.argmax())
        print(f"{i}\t{names[k]}\t(score {scores[i, k]:.4f}, softmax {row[k]:.3f})")
    return 0


# ---------------------------------------------------------------- info
def _versions() -> dict[str, str]:
    from importlib import metadata

    import deepnet

    out = {"deepnet": deepnet.__version__, "python": platform.python_version(), "numpy": np.__version__}
    for pkg in ("cupy", "cupy-cuda12x", "cupy-cuda13x", "scikit-learn", "tqdm", "matplotlib", "safetensors",
                "array-api-strict", "torch"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def cmd_info(args: argparse.Namespace) -> int:
    from .backend import available_backends

    print(f"deepnet {_versions()['deepnet']} on Python {platform.python_version()} ({platform.machine()}, "
          f"{os.cpu_count()} CPUs)")
    for k, v in _versions().items():
        if k not in ("deepnet", "python"):
            print(f"  {k:18s} {v}")
    print("backends:")
    for name, status in available_backends().items():
        print(f"  {name:8s} {status}")
    try:
        from .backend import get_ops

        ops = get_ops("cupy")
        info = ops.device_info()
        print(f"GPU: {info['name']}, {info['total_bytes'] / 2**30:.1f} GiB total, "
              f"{info['free_bytes'] / 2**30:.1f} GiB free; memory pool used {info['pool_used_bytes'] / 2**20:.1f} MiB, "
              f"cached {info['pool_cached_bytes'] / 2**20:.1f} MiB (limit: CUPY_GPU_MEMORY_LIMIT="
              f"{os.environ.get('CUPY_GPU_MEMORY_LIMIT', 'unset')})")
    except Exception:
        print("GPU: none usable (see the cupy backend line above)")
    print(f"DEEPNET_BACKEND={os.environ.get('DEEPNET_BACKEND', '')!s}  DEEPNET_DATA={os.environ.get('DEEPNET_DATA', '')!s}")
    return 0


# ---------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="deepnet", description="Train and use neural networks with explicit backpropagation.")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True)

    def data_args(sp: argparse.ArgumentParser, default_dataset: str | None) -> None:
        sp.add_argument("--dataset", default=default_dataset,
                        help="digits (offline default), mnist, fashion-mnist, seed-csv, csv, npz")
        sp.add_argument("--data", default=None, help="folder (mnist, fashion-mnist) or file (csv, npz) to read")
        sp.add_argument("--label-column", default="label", help="label column of a csv data set (name or index)")
        sp.add_argument("--no-download", action="store_true", help="never download; fail if files are missing")
        sp.add_argument("--backend", default=None, help="numpy (default), cupy or strict")
        sp.add_argument("--seed", type=int, default=0)
        sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    t = sub.add_parser("train", help="train a network and save it")
    data_args(t, None)
    t.add_argument("--preset", choices=["seed"], help="seed: the course notebook's 784-50-10 network")
    t.add_argument("--shortcut", action="store_true", help="with --preset seed: the notebook's ẽ = Aᵀe shortcut")
    t.add_argument("--layers", help="layer sizes, e.g. 784-128-64-10 (default: inputs-128-classes)")
    t.add_argument("--activation", default="relu", choices=["relu", "sigmoid", "tanh", "leaky_relu"])
    t.add_argument("--loss", choices=["xent", "sse", "mse"], default=None)
    t.add_argument("--optimizer", choices=["sgd", "momentum", "adam", "adamw", "rmsprop"], default=None)
    t.add_argument("--lr", type=float, default=None, help="learning rate (optimizer default if omitted)")
    t.add_argument("--momentum", type=float, default=None)
    t.add_argument("--weight-decay", type=float, default=0.0)
    t.add_argument("--clip-norm", type=float, default=None)
    t.add_argument("--max-norm", type=float, default=None)
    t.add_argument("--dropout", type=float, default=0.0, help="dropout rate after each hidden activation")
    t.add_argument("--schedule", default=None, help="learning-rate schedule: cosine, step, exponential, warmup-cosine")
    t.add_argument("--early-stopping", type=int, default=0, metavar="PATIENCE")
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--scale", choices=["unit", "seed", "raw"], default=None, help="pixel scaling")
    t.add_argument("--no-shuffle", dest="shuffle", action="store_false", default=None)
    t.add_argument("--val-fraction", type=float, default=None,
                   help="hold out this fraction of the training set for validation (default 0.1; 0 for none; "
                        "the seed preset uses none, like the notebook)")
    t.add_argument("--diagnostics", action="store_true", help="record gradient flow per layer (and plot it)")
    t.add_argument("--out", default=None, help="folder for model.npz and summary.json (default runs/<dataset>)")
    t.add_argument("--plot", default=None, metavar="DIR", help="write PNG pictures here")
    t.add_argument("--checkpoint-every", type=int, default=0, metavar="STEPS")
    t.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="accuracy, per-class accuracy and confusion matrix of a model")
    e.add_argument("model")
    data_args(e, None)
    e.add_argument("--json", default=None, help="also write the results to this JSON file")
    e.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser("predict", help="predict classes for images, .npy arrays or CSV rows")
    pr.add_argument("model")
    pr.add_argument("input")
    pr.add_argument("--backend", default=None)
    pr.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    pr.set_defaults(func=cmd_predict)

    i = sub.add_parser("info", help="versions, backends, GPU")
    i.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    i.set_defaults(func=cmd_info)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("deepnet: interrupted", file=sys.stderr)
        return 130
    except _known_errors() as err:
        if args.debug:
            raise
        msg = str(err).strip() or type(err).__name__
        if isinstance(err, KeyError) and err.args:
            msg = str(err.args[0])
        print(f"deepnet: error: {msg}", file=sys.stderr)
        if not isinstance(err, CLIError):
            print("deepnet: (run with --debug for the full traceback)", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
