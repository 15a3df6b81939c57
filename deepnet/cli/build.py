"""What a run trains: its network, loss, optimizer and the record of its data split."""

from __future__ import annotations

import argparse
import os
from typing import Any

import numpy as np

from ..layers import Dropout
from ..network import Network
from ..optimizers import get_optimizer
from ..presets import cnn_layers, mlp_layers, parse_spec, resmlp_layers, resnet_layers, seed_layers
from .common import CLIError
from .options import augmentation


def build_network(args: argparse.Namespace, n_in: int, n_classes: int, image_shape: Any = None) -> Any:
    if args.preset == "seed":
        if n_in != 784 or n_classes != 10:
            raise CLIError(f"--preset seed is 784-50-10 but the data has {n_in} features and {n_classes} classes")
        return Network(seed_layers(args.shortcut), seed=args.seed, backend=args.backend)
    if args.model == "cnn":
        if image_shape is None or int(np.prod(image_shape)) != n_in:
            raise CLIError(f"--model cnn needs image data (a data set with an image shape), but --dataset "
                           f"{args.dataset} gives rows of {n_in} values")
        layers = cnn_layers(image_shape, n_classes, dropout=args.dropout, batchnorm=args.batchnorm)
        layers[1:1] = augmentation(args)                  # on the images, right after Reshape
        return Network(layers, seed=args.seed, backend=args.backend)
    if args.model == "resnet":
        if image_shape is None or int(np.prod(image_shape)) != n_in:
            raise CLIError(f"--model resnet needs image data (a data set with an image shape), but --dataset "
                           f"{args.dataset} gives rows of {n_in} values")
        return Network(resnet_layers(image_shape, n_classes, args.depth, augment=augmentation(args)),
                       seed=args.seed, backend=args.backend)
    if args.model == "resmlp" or args.depth is not None:
        return Network(resmlp_layers(n_in, n_classes, args.depth, args.width, residual=args.model == "resmlp"),
                       seed=args.seed, backend=args.backend)
    spec = args.layers or f"{n_in}-128-{n_classes}"
    sizes = parse_spec(spec)
    if sizes[0] != n_in:
        raise CLIError(f"--layers {spec}: the data has {n_in} features, so the first size must be {n_in}")
    if sizes[-1] != n_classes:
        raise CLIError(f"--layers {spec}: the data has {n_classes} classes, so the last size must be {n_classes}")
    hidden = None
    if args.dropout:
        def hidden(width: int) -> list[Any]:
            return [Dropout(args.dropout)]
    out_act = "sigmoid" if args.loss in ("sse", "mse") else None
    return Network(mlp_layers(sizes, args.activation, output_activation=out_act, hidden=hidden,
                              batchnorm=args.batchnorm), seed=args.seed, backend=args.backend)


def build_optimizer(args: argparse.Namespace) -> Any:
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


def split_record(args: argparse.Namespace, data: Any) -> dict[str, Any]:
    """How the run's test rows were chosen, recorded in the model file (``extra["split"]``) and
    its checkpoints, so that ``deepnet evaluate`` uses exactly the rows held out from training."""
    return {"dataset": data.name, "data": None if args.data is None else os.path.abspath(args.data),
            "label_column": args.label_column if data.name == "csv" else None, "scale": args.scale,
            "seed": args.seed, "test": data.split, "test_rows": int(len(data.y_test)),
            "test_sha256": data.test_digest()}
