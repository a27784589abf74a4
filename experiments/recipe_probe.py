"""Search for the demo's short recipe: train the paper net on in-memory `shapes` under several
recipes, each for the same number of images, and print a table of validation accuracy.

Not part of the package: a research script behind EXPERIMENTS.md's "demo recipe" section. It reuses
the package's model, augmentation and runtime, and keeps the rendered images in memory so that a
probe pays for rendering once.

    python experiments/recipe_probe.py --device cpu --images 3200 --arms paper,demo
    python experiments/recipe_probe.py --device cuda --images 30000 --epochs 8   # all arms
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from alexnet import accel
from alexnet.data import open_dataset
from alexnet.data.augment import Augment
from alexnet.model import alexnet
from alexnet.runtime import Runtime

# name -> recipe. init: "paper" (N(0, std²), biases `bias` as in the paper) | "kaiming" (He
# normal, fan-in, biases 0 except `bias` in the paper's ones) | "lsuv" (paper init, then each
# layer's weights rescaled so its output has unit std on one batch). scale multiplies the
# mean-subtracted pixels before conv1 ("std" = 1 / the per-channel pixel std).
ARMS = {
    "paper": dict(init="paper", std=0.01, bias=1.0, lr=0.01),
    "demo": dict(init="paper", std=0.02, bias=1.0, lr=0.002),
    "paper-b0.1": dict(init="paper", std=0.01, bias=0.1, lr=0.01),
    "kaiming": dict(init="kaiming", bias=0.0, lr=0.01, scale="std"),
    "kaiming-lr.02": dict(init="kaiming", bias=0.0, lr=0.02, scale="std"),
    "kaiming-lr.005": dict(init="kaiming", bias=0.0, lr=0.005, scale="std"),
    "kaiming-b.1": dict(init="kaiming", bias=0.1, lr=0.01, scale="std"),
    "lsuv": dict(init="lsuv", std=0.01, bias=0.0, lr=0.01, scale="std"),
    "lsuv-lr.02": dict(init="lsuv", std=0.01, bias=0.0, lr=0.02, scale="std"),
    "kaiming-lr.05-clip": dict(init="kaiming", bias=0.0, lr=0.05, scale="std", clip=1.0),
    "adam-kaiming-3e-4": dict(init="kaiming", bias=0.0, lr=3e-4, scale="std", opt="adam"),
    "adam-kaiming-1e-4": dict(init="kaiming", bias=0.0, lr=1e-4, scale="std", opt="adam"),
    "adam-paper-1e-4": dict(init="paper", std=0.01, bias=1.0, lr=1e-4, opt="adam"),
    "adam-paper-3e-5": dict(init="paper", std=0.01, bias=1.0, lr=3e-5, opt="adam"),
    "paper-lr.002": dict(init="paper", std=0.01, bias=1.0, lr=0.002),
    "paper-lr.005": dict(init="paper", std=0.01, bias=1.0, lr=0.005),
    "paper-b0": dict(init="paper", std=0.01, bias=0.0, lr=0.01),
    "paper-batch128": dict(init="paper", std=0.01, bias=1.0, lr=0.01, batch=128),
    "kaiming-nodrop": dict(init="kaiming", bias=0.0, lr=0.01, scale="std", dropout=0.0),
    "kaiming-batch64": dict(init="kaiming", bias=0.0, lr=0.02, scale="std", batch=64),
    "kaiming-8k": dict(init="kaiming", bias=0.0, lr=0.01, scale="std", train=8000),
    "paper-8k": dict(init="paper", std=0.01, bias=1.0, lr=0.01, train=8000),
}
# The second round (after the first showed Adam + He init ahead, and overfitting on 4,000 images).
K = dict(init="kaiming", bias=0.0, scale="std")
ARMS.update({
    "adam3e-4-t4k": dict(K, lr=3e-4, opt="adam"),
    "adam3e-4-t12k": dict(K, lr=3e-4, opt="adam", train=12000),
    "adam1e-3-t12k": dict(K, lr=1e-3, opt="adam", train=12000),
    "adam3e-4-t12k-b64": dict(K, lr=3e-4, opt="adam", train=12000, batch=64),
    "adam1e-3-t12k-b64": dict(K, lr=1e-3, opt="adam", train=12000, batch=64),
    "adam3e-4-t12k-nodrop": dict(K, lr=3e-4, opt="adam", train=12000, dropout=0.0),
    "adam1e-4-t12k": dict(K, lr=1e-4, opt="adam", train=12000),
    "sgd.05clip-t12k": dict(K, lr=0.05, clip=1.0, train=12000),
    "sgd.1clip-t12k": dict(K, lr=0.1, clip=1.0, train=12000),
    "sgd.05clip-t12k-b64": dict(K, lr=0.05, clip=1.0, train=12000, batch=64),
    "adam-paper1e-4-t12k": dict(init="paper", std=0.01, bias=1.0, lr=1e-4, opt="adam", train=12000),
    "adam3e-4-lsuv-t12k": dict(init="lsuv", std=0.01, bias=0.0, scale="std", lr=3e-4, opt="adam",
                               train=12000),
    "adam3e-4-t36k": dict(K, lr=3e-4, opt="adam", train=36000),
    "adam3e-4-t12k-b128": dict(K, lr=3e-4, opt="adam", train=12000, batch=128),
    "adam1e-3-t12k-b128": dict(K, lr=1e-3, opt="adam", train=12000, batch=128),
})
ORDER2 = ["adam3e-4-t12k", "adam1e-3-t12k", "adam3e-4-t12k-b64", "adam1e-3-t12k-b64",
          "adam3e-4-t4k", "sgd.05clip-t12k", "adam3e-4-t36k", "adam3e-4-t12k-nodrop",
          "adam1e-3-t12k-b128", "adam3e-4-t12k-b128", "sgd.1clip-t12k", "sgd.05clip-t12k-b64",
          "adam1e-4-t12k", "adam-paper1e-4-t12k", "adam3e-4-lsuv-t12k"]
ORDER = ["paper", "demo", "paper-lr.002", "paper-lr.005", "paper-b0.1", "paper-b0", "kaiming",
         "kaiming-lr.02", "kaiming-lr.005", "kaiming-lr.05-clip", "lsuv", "lsuv-lr.02",
         "adam-kaiming-3e-4", "adam-kaiming-1e-4", "adam-paper-1e-4", "adam-paper-3e-5",
         "kaiming-nodrop", "kaiming-batch64", "kaiming-8k", "paper-8k", "paper-batch128"]
PAPER_ONES = {"conv2", "conv4", "conv5", "fc6", "fc7"}


def layers(model):
    return [(n, m) for n, m in [*model.features.named_children(), *model.classifier.named_children()]
            if isinstance(m, (nn.Conv2d, nn.Linear))]


@torch.no_grad()
def initialise(model, arm, x):
    for name, m in layers(model):
        if arm["init"] == "kaiming":
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu" if name != "fc8" else "linear")
        else:
            nn.init.normal_(m.weight, std=arm.get("std", 0.01))
        nn.init.constant_(m.bias, arm["bias"] if name in PAPER_ONES else 0.0)
    if arm["init"] == "lsuv":  # unit std of each layer's pre-activation on this batch, in order
        model.eval()
        for name, m in layers(model):
            out = {}
            h = m.register_forward_hook(lambda mod, i, o: out.__setitem__("y", o))
            model(x)
            h.remove()
            m.weight.mul_(1.0 / out["y"].float().std().clamp_min(1e-8))
        model.train()


def run_arm(name, arm, data, args, device, seed):
    torch.manual_seed(seed)
    train_x, train_y, val_x, val_y, stats = data
    n_train = arm.get("train", args.train)
    train_x, train_y = train_x[:n_train], train_y[:n_train]
    batch = arm.get("batch", args.batch)
    model = alexnet("paper", num_classes=10, dropout=arm.get("dropout", 0.5))
    rt = Runtime.create(device, args.precision, True)
    scale = 1.0
    if arm.get("scale") == "std":
        scale = 1.0 / float(stats["std"].mean())
    aug = Augment(stats, crop_size=227, device=rt.device)
    first = aug.train(train_x[:batch].to(rt.device)) * scale
    initialise(model, arm, first.cpu())
    model = rt.place(model)
    if arm.get("opt") == "adam":
        opt = torch.optim.AdamW(model.parameters(), lr=arm["lr"], weight_decay=5e-4)
    else:
        opt = accel.make_sgd(model.parameters(), lr=arm["lr"], momentum=0.9, weight_decay=5e-4,
                             device=rt.device)
    steps = args.images // batch
    per_epoch = max(1, len(train_x) // batch)
    warm = int(args.warmup * per_epoch)
    g = torch.Generator().manual_seed(seed)
    log, t0, order, k = [], time.perf_counter(), None, 0
    for step in range(steps):
        if step % per_epoch == 0:
            order, k = torch.randperm(len(train_x), generator=g), 0
        idx = order[k * batch:(k + 1) * batch]
        k += 1
        lr = arm["lr"] * 0.5 * (1 + math.cos(math.pi * step / steps)) * min(1, (step + 1) / max(warm, 1))
        for group in opt.param_groups:
            group["lr"] = lr
        x = rt.to_input(aug.train(train_x[idx].to(rt.device)) * scale)
        with rt.autocast():
            logits = model(x)
        loss = F.cross_entropy(logits.float(), train_y[idx].to(rt.device))
        if not torch.isfinite(loss):
            log.append({"step": step, "diverged": True})
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if arm.get("clip", args.clip):
            torch.nn.utils.clip_grad_norm_(model.parameters(), arm.get("clip", args.clip))
        opt.step()
        if (step + 1) % per_epoch == 0 or step + 1 == steps:
            acc = accuracy(model, aug, rt, val_x, val_y, scale)
            log.append({"images": (step + 1) * batch, "loss": loss.item(), "val_acc": acc,
                        "s": round(time.perf_counter() - t0, 1)})
            print(f"  {name}: {log[-1]}", flush=True)
    return log


@torch.no_grad()
def accuracy(model, aug, rt, val_x, val_y, scale):
    model.eval()
    right = 0
    for i in range(0, len(val_x), 100):
        x = rt.to_input(aug.center(val_x[i:i + 100].to(rt.device)) * scale)
        with rt.autocast():
            right += (model(x).argmax(1).cpu() == val_y[i:i + 100]).sum().item()
    model.train()
    return right / len(val_x)


def render_all(dataset, workers):
    """Every image of a split, in order, rendered by the package's loader's worker processes."""
    from alexnet.data.loader import Loader
    batches = list(Loader(dataset, 256, shuffle=False, workers=workers, even=False))
    return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="auto")
    p.add_argument("--train", type=int, default=4000)
    p.add_argument("--val", type=int, default=500)
    p.add_argument("--images", type=int, default=24000, help="training images per arm")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--warmup", type=float, default=0.3, help="epochs of linear warm-up")
    p.add_argument("--clip", type=float, default=0.0)
    p.add_argument("--seeds", default="0")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--arms", default=",".join(ORDER), help="comma-separated, or round2")
    p.add_argument("--deadline", type=float, default=0, help="start no arm after this many s")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    t = time.perf_counter()
    if args.arms == "round2":
        args.arms = ",".join(ORDER2)
    n_max = max([args.train] + [ARMS[a].get("train", 0) for a in args.arms.split(",")])
    # Statistics from the first args.train images' set; a larger set shares its first images.
    train = open_dataset(f"shapes:{n_max}:{args.val}", "train")
    val = open_dataset(f"shapes:{n_max}:{args.val}", "val")
    data = (*render_all(train, args.workers), *render_all(val, args.workers), train.stats())
    print(f"rendered {len(train)}+{len(val)} images in {time.perf_counter() - t:.0f} s", flush=True)
    results, start = {}, time.perf_counter()
    for seed in map(int, args.seeds.split(",")):
        for name in args.arms.split(","):
            if args.deadline and time.perf_counter() - start > args.deadline:
                break
            key = name if seed == 0 else f"{name}/seed{seed}"
            results[key] = run_arm(key, ARMS[name], data, args, args.device, seed)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"args": vars(args), "results": results}, f, indent=1)
    print("| arm | " + " | ".join(f"acc@{r['images']}" for r in max(results.values(), key=len)
                                  if "images" in r) + " |")
    for name, log in results.items():
        print(f"| {name} | " + " | ".join("div" if r.get("diverged") else f"{r['val_acc']:.2f}"
                                          for r in log) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
