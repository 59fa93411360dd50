"""Time one training step of the detector and the share of it spent outside the network.

For a 2D and a 3D patch, a training step is split into: network forward, anchor generation, anchor
matching (IoU + matcher + box encoding), the losses (hard negative mining CE, smooth L1, segmentation)
and backward. Inference is split into the network forward and the decoding (score threshold, top-k,
per-class NMS). Decoding is timed twice: with the plan's decode_min_score on the untrained network (almost no
candidate passes) and as a worst case with decode_min_score 0 (pre_nms_top_k candidates go through NMS).

    python scripts/bench_step.py                      # both configs, CPU (or CUDA when available)
    python scripts/bench_step.py --only 2d --reps 5 --device cuda --net paper
    python scripts/bench_step.py --plans $RUD_DATA/Task110_ToyNodules/plans.json --model retina_unet retina_net
                                                      # a task's planned network, patch and batch, per model
    python scripts/bench_step.py --plans $RUD_DATA/Task110_ToyNodules/plans.json --by-layer 12
                                                      # and the 12 costliest convolutions of a training step

--by-layer profiles the timed training steps (torch.profiler) and sums each convolution's own time, forward and
backward, per feature-map grid and weight shape: the layers where a step's time goes, for deciding what to make
cheaper (a head level, a decoder stage, the anchors per position that set a head's output channels).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from retinaunet.models import build_model
from retinaunet.plans import Plans, make_test_plans

# The paper's networks (REFERENCE.md): ResNet50, start 48/18, FPN 192/36, heads 256/64 in 2D/3D.
PAPER_NET = {
    2: dict(start_channels=48, max_channels=1536, fpn_channels=192, head_channels=256, head_convs=4,
            block="bottleneck", blocks_per_stage=[3, 4, 6, 3]),
    3: dict(start_channels=18, max_channels=576, fpn_channels=36, head_channels=64, head_convs=4,
            block="bottleneck", blocks_per_stage=[3, 4, 6, 3]),
}
CONFIGS = {"2d": dict(dim=2, patch_size=[320, 320], batch=4), "3d": dict(dim=3, patch_size=[64, 128, 128], batch=2)}


def make_plans(dim: int, patch_size: list[int], net: str) -> Plans:
    extra = PAPER_NET[dim] if net == "paper" else {}
    return make_test_plans(dim=dim, num_classes=2, patch_size=patch_size, **extra)


def make_batch(plans: Plans, batch: int, objects: int, device: torch.device):
    """Random images and `objects` cuboid objects per patch (boxes, labels, seg)."""
    g = torch.Generator().manual_seed(0)
    shape = plans.patch_size
    images = torch.randn(batch, plans.in_channels, *shape, generator=g)
    seg = torch.zeros(batch, *shape, dtype=torch.long)
    boxes, labels = [], []
    for b in range(batch):
        bx, lb = [], []
        for _ in range(objects):
            size = [max(2, int(s * 0.1)) for s in shape]
            lo = [int(torch.randint(0, s - z, (1,), generator=g)) for s, z in zip(shape, size)]
            hi = [a + z for a, z in zip(lo, size)]
            c = int(torch.randint(0, plans.num_classes, (1,), generator=g))
            seg[(b, *[slice(a, z) for a, z in zip(lo, hi)])] = c + 1
            bx.append(lo + hi)
            lb.append(c)
        boxes.append(torch.tensor(bx, dtype=torch.float32, device=device))
        labels.append(torch.tensor(lb, device=device))
    return images.to(device), boxes, labels, seg.to(device)


class Timer:
    """Accumulates wall time per named part: `with timer("forward"): ...` (synchronises CUDA)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.times: dict[str, float] = {}
        self._name = ""

    def __call__(self, name: str) -> Timer:
        self._name = name
        return self

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __enter__(self) -> Timer:
        self._sync()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sync()
        self.times[self._name] = time.perf_counter() - self._t0


def decode_batch(det, probs: torch.Tensor, deltas: torch.Tensor, anchors: torch.Tensor, shape: list[int]):
    return [det.postprocess(probs[b], deltas[b].float(), anchors, shape) for b in range(probs.shape[0])]


def one_step(det, images, boxes, labels, seg, patch_size: list[int], timer: Timer, infer: bool = True) -> int:
    """One timed training step and (``infer``) one timed inference pass; returns the number of anchors."""
    det.train()
    det.zero_grad(set_to_none=True)
    with timer("forward"):
        out = det.network(images)
    with timer("anchors"):
        anchors = det.anchors(patch_size, out.feature_shapes, images.device)
    with timer("matching"):
        targets, positive, deltas = det.assign_targets(anchors, boxes, labels, patch_size)
    with timer("loss"):
        terms = {**det.network.cls_head.loss(out.cls_logits, targets),
                 **det.network.box_head.loss(out.box_deltas, deltas, positive),
                 **det.extra_losses(out, seg)}
        total = sum(det.loss_weight(k) * v for k, v in terms.items())
    with timer("backward"):
        total.backward()
    if not infer:
        return anchors.shape[0]
    det.eval()
    with torch.no_grad():
        with timer("infer_forward"):
            out = det.network(images)
        probs = torch.softmax(out.cls_logits.float(), -1)[..., 1:]
        with timer("decode"):
            decode_batch(det, probs, out.box_deltas, anchors, patch_size)
        min_score, det.min_score = det.min_score, 0.0
        with timer("decode_worst"):
            decode_batch(det, probs, out.box_deltas, anchors, patch_size)
        det.min_score = min_score
    return anchors.shape[0]


def conv_costs(det, images, boxes, labels, seg, patch_size: list[int], reps: int) -> tuple[list[dict], float]:
    """Own CPU time per training step of every convolution, summed per (grid, weight shape), forward and backward,
    costliest first; and the step's whole own CPU time. From ``reps`` profiled steps."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(reps):
            one_step(det, images, boxes, labels, seg, patch_size, Timer(images.device), infer=False)
    layers: dict[tuple, dict] = {}
    total = 0.0
    for ev in prof.key_averages(group_by_input_shape=True):
        own = ev.self_cpu_time_total / 1e3 / reps  # ms per step
        total += own
        if "convolution" not in ev.key or own <= 0:
            continue
        backward = "backward" in ev.key
        shapes = [list(s) for s in ev.input_shapes]
        x, w = (shapes[1], shapes[2]) if backward else (shapes[0], shapes[1])
        if len(x) < 3 or len(w) < 3:
            continue
        row = layers.setdefault((tuple(x[2:]), tuple(w)), {"grid": x[2:], "weight": w, "forward": 0.0,
                                                           "backward": 0.0})
        row["backward" if backward else "forward"] += own
    rows = sorted(layers.values(), key=lambda r: -(r["forward"] + r["backward"]))
    return rows, total


def bench(plans: Plans, batch: int, reps: int, objects: int, device: torch.device,
          model: str = "retina_unet", by_layer: int = 0) -> dict[str, float]:
    torch.manual_seed(0)
    patch_size = list(plans.patch_size)
    det = build_model(model, plans).to(device)
    images, boxes, labels, seg = make_batch(plans, batch, objects, device)
    rows: dict[str, list[float]] = {}
    for rep in range(reps + 1):  # the first repetition warms up and is dropped
        timer = Timer(device)
        num_anchors = one_step(det, images, boxes, labels, seg, patch_size, timer)
        if rep > 0:
            for k, v in timer.times.items():
                rows.setdefault(k, []).append(v)
    med = {k: statistics.median(v) for k, v in rows.items()}
    med["step"] = sum(med[k] for k in ("forward", "anchors", "matching", "loss", "backward"))
    med["num_anchors"] = float(num_anchors)
    if by_layer:
        med["layers"], med["profiled_ms"] = conv_costs(det, images, boxes, labels, seg, patch_size, reps)
    return med


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=sorted(CONFIGS), help="run one config only")
    p.add_argument("--net", choices=["small", "paper"], default="small",
                   help="small: make_test_plans' net (ResNet basic [1,1,1,1], start 8, FPN 32, heads 32x2); "
                        "paper: ResNet50 with the paper's channels")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions after one warm-up")
    p.add_argument("--objects", type=int, default=3, help="objects per patch")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    p.add_argument("--plans", default=None, help="a task's plans.json: its default plan's network, patch and batch "
                                                  "instead of the built-in configs")
    p.add_argument("--model", nargs="+", default=["retina_unet"],
                   help="detectors to time (retina_unet, retina_net, det_unet: the one-stage models)")
    p.add_argument("--by-layer", type=int, default=0, metavar="N",
                   help="also profile the training steps and list the N costliest convolutions (grid, weight)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.plans:
        from retinaunet.plans import load_plans

        planned = load_plans(args.plans)
        runs = [(f"{Path(args.plans).parent.name} {planned.plan_name}, {m}", planned, planned.batch_size, m)
                for m in args.model]
    else:
        runs = [(name, make_plans(CONFIGS[name]["dim"], CONFIGS[name]["patch_size"], args.net),
                 CONFIGS[name]["batch"], m) for name in ([args.only] if args.only else list(CONFIGS))
                for m in args.model]
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, net "
          f"{'planned' if args.plans else args.net}, reps {args.reps}, {args.objects} objects per patch")
    for name, plans, batch, model in runs:
        n = plans.network
        print(f"\n[{name}] patch {list(plans.patch_size)} batch {batch}: block {n.block} "
              f"{n.blocks_per_stage}, start {n.start_channels}, max {n.max_channels}, "
              f"fpn {n.fpn_channels}, head {n.head_channels}x{n.head_convs}, strides {n.strides}")
        r = bench(plans, batch, args.reps, args.objects, device, model, args.by_layer)
        print(f"anchors per patch: {int(r['num_anchors'])}")
        print(f"{'part':<28}{'ms':>10}{'share':>10}")
        for key, label in [("forward", "network forward"), ("backward", "network backward"),
                           ("anchors", "anchor generation"), ("matching", "anchor matching"),
                           ("loss", "losses (HNM, L1, seg)")]:
            print(f"{label:<28}{1000 * r[key]:>10.1f}{100 * r[key] / r['step']:>9.1f}%")
        overhead = r["anchors"] + r["matching"] + r["loss"]
        print(f"{'training step':<28}{1000 * r['step']:>10.1f}{'':>10}")
        print(f"{'  outside the network':<28}{1000 * overhead:>10.1f}{100 * overhead / r['step']:>9.1f}%")
        for key, label in [("decode", "decoding (plan decode_min_score)"),
                           ("decode_worst", "decoding (decode_min_score 0)")]:
            share = r[key] / (r["infer_forward"] + r[key])
            print(f"{label:<28}{1000 * r[key]:>10.1f}{100 * share:>9.1f}%  of inference "
                  f"(forward {1000 * r['infer_forward']:.1f} ms)")
        if args.by_layer:
            print_layers(r["layers"], r["profiled_ms"], args.by_layer)


def print_layers(layers: list[dict], total_ms: float, top: int) -> None:
    """The ``top`` costliest convolutions of a profiled step, and what all convolutions take."""
    conv = sum(r["forward"] + r["backward"] for r in layers)
    print(f"convolutions, own CPU time in a profiled step (all of it {total_ms:.1f} ms, "
          f"all convolutions {conv:.1f} ms = {100 * conv / max(total_ms, 1e-9):.1f}%):")
    print(f"{'grid':<18}{'weight (out, in, kernel)':<26}{'forward ms':>11}{'backward ms':>12}{'share':>8}")
    for r in layers[:top]:
        grid = " x ".join(map(str, r["grid"]))
        out_c, in_c, *kernel = r["weight"]
        weight = f"{out_c} <- {in_c}, {'x'.join(map(str, kernel))}"
        both = r["forward"] + r["backward"]
        print(f"{grid:<18}{weight:<26}{r['forward']:>11.1f}{r['backward']:>12.1f}"
              f"{100 * both / max(total_ms, 1e-9):>7.1f}%")


if __name__ == "__main__":
    main()
