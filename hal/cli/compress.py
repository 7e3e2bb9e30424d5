"""``hal compress``: the accuracy-aware search (``hal.compress``) on a device, as a table."""

from __future__ import annotations

import json
import sys

from hal.errors import OptionError


def add_parser(sub) -> None:
    c = sub.add_parser("compress", help="try pruning ratios and precisions on a device; print "
                       "the accuracy / latency / size table and the model within the bound")
    c.add_argument("model", help="a zoo model name or an .onnx path")
    c.add_argument("--device", default="cpu", help="the device the candidates run on")
    c.add_argument("--data", default="digits", metavar="digits|FILE.npz",
                   help="'digits' (its train split fine-tunes and calibrates, its test split "
                        "measures accuracy) or an .npz with x, y (and x_val, y_val)")
    c.add_argument("--max-accuracy-drop", type=float, default=0.01,
                   help="the largest fall in top-1 accuracy allowed, as a fraction (0.01: one "
                        "point)")
    c.add_argument("--objective", default="latency", help="latency or size")
    c.add_argument("--batch", type=int, default=64, help="the batch size latency is measured at")
    c.add_argument("--ratios", default="0.25,0.5",
                   help="pruning ratios to try, comma-separated ('' for none)")
    c.add_argument("--precisions", default="fp32,bf16,int8,int8-dynamic",
                   help="precisions to try, comma-separated: fp32, bf16, int8, int8-dynamic, "
                        "int8-qat (quantization-aware fine-tuning, not tried unless named)")
    c.add_argument("--train-device", default="cpu@torch", help="where fine-tuning runs")
    c.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs after pruning")
    c.add_argument("--pretrain-epochs", type=int, default=None,
                   help="train the model first for this many epochs (default: 3 for a zoo "
                        "name, whose weights are random; 0 for a file)")
    c.add_argument("--budget", type=float, default=0.5, help="seconds of timed calls per row")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--out", metavar="FILE.onnx", help="save the chosen model")
    c.add_argument("--html", metavar="FILE.html",
                   help="write the table and the accuracy-vs-latency plot")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_compress)


def cmd_compress(args) -> int:
    import hal
    from hal.cli.train import load_data
    from hal.frontends import is_zoo_name, to_model

    model = to_model(args.model)
    (x, y), validation = load_data(args.data, model)
    pretrain = args.pretrain_epochs
    if pretrain is None:
        pretrain = 3 if is_zoo_name(args.model) else 0
    if pretrain < 0:
        raise OptionError(f"--pretrain-epochs must be >= 0, got {pretrain}")
    say = (lambda line: None) if args.json else (lambda line: print(line, file=sys.stderr))
    if pretrain:
        say(f"training {model.name} for {pretrain} epoch(s) on {args.train_device} first "
            f"(--pretrain-epochs 0 keeps its weights)")
        model = hal.train(model, (x, y), device=args.train_device, epochs=pretrain,
                          seed=args.seed, progress=False).model
    result = hal.compress(model, (x, y), validation=validation, device=args.device,
                          max_accuracy_drop=args.max_accuracy_drop, objective=args.objective,
                          batch=args.batch, prune_ratios=_floats(args.ratios, "--ratios"),
                          precisions=[p for p in args.precisions.split(",") if p],
                          train_device=args.train_device, finetune_epochs=args.epochs,
                          budget_s=args.budget, seed=args.seed, log=say)
    if args.out:
        hal.save(result.model, args.out)
    if args.html:
        with open(args.html, "w", encoding="utf-8") as f:
            f.write(result.html())
    if args.json:
        print(json.dumps({"model": model.name, "data": args.data, **result.to_dict(),
                          "out": args.out}, indent=2, default=str))
    else:
        print(result)
    return 0


def _floats(text: str, flag: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise OptionError(f"{flag} takes comma-separated numbers, got {text!r}") from None
