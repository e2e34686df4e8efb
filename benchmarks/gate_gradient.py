"""Why a trained gate keeps image weight on types whose photo says nothing within the type (issue 14).

Loads a trained gated checkpoint (``query_gate`` of benchmarks/fusion_storefronts.py) and, on training batches,
splits the gradient that the query-fused InfoNCE term (query -> product direction) sends to each product type's
gate logit into the part from **same-type** in-batch negatives (the row's positive and negatives of its own type;
other types masked out) and the part from **other-type** negatives (same-type negatives masked out). A negative
gradient on the logit means "more image weight lowers the loss". Also reports the share of in-batch negatives that
share the row's type. Training data only: no dev or test pair is read.

Run:  python benchmarks/gate_gradient.py --storefront home_books \
        --checkpoint runs/fusion/home_books/seed0/runs/query_gate/best --out benchmarks/results
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from querylife.config import load_config, with_overrides  # noqa: E402
from querylife.data.storefront import DemoConfig  # noqa: E402
from querylife.losses import info_nce  # noqa: E402
from querylife.model import WEIGHTS_NAME  # noqa: E402
from querylife.report import md_table  # noqa: E402
from querylife.runinfo import command_line, machine_info  # noqa: E402
from querylife.towers import vision_image_size  # noqa: E402
from querylife.train import Trainer  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from benchkit import demo_dataset, quiet_transformers, run_header, write_results  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--storefront", default="home_books")
    parser.add_argument("--checkpoint", required=True, help="a query_gate run's best/ directory")
    parser.add_argument("--work", default="runs/fusion")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--stem", default=None, help="results file name (default gate_gradient_STOREFRONT)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="the run's config overrides")
    args = parser.parse_args()
    quiet_transformers()
    size = vision_image_size(load_config(None, args.overrides).model.tower)  # the storefront as the run saw it
    store, base, data = demo_dataset(
        Path(args.work) / "data" / args.storefront,
        args.overrides,
        DemoConfig(seed=0, storefront=args.storefront, image_size=size),
    )
    cfg = with_overrides(base, {"model.fusion.mode": "query_type_gate"})
    trainer = Trainer(cfg, data, Path(args.work) / "gradient_tmp", progress=False)
    model = trainer.model
    model.load_state_dict(load_file(str(Path(args.checkpoint) / WEIGHTS_NAME)), strict=False)
    model.eval()
    n_types = len(model.types)
    grads = {k: torch.zeros(n_types) for k in ("same", "other", "all")}
    same_share, weights_sum, weights_n = [], torch.zeros(n_types), torch.zeros(n_types)
    for i, batch in enumerate(trainer.batches.epoch(0)):
        if i >= args.batches:
            break
        inputs = trainer.inputs(batch)
        masks = trainer.masks(batch)
        types = inputs["type_ids"].cpu()  # (Bp,)
        row_type = types[: batch.size]  # (B,) the positives' types
        same = row_type[:, None] == types[None, :]  # (B, Bp)
        eye = torch.eye(batch.size, len(types), dtype=torch.bool)
        same_share.append(float((same & ~eye & ~masks.ignore).sum() / (~eye & ~masks.ignore).sum()))
        for kind, extra in (("same", ~same), ("other", same & ~eye), ("all", torch.zeros_like(same))):
            model.zero_grad(set_to_none=True)
            emb = model.embed(**inputs)
            fused = model.fusion.pairwise(emb.q, emb.t, emb.v, emb.type_ids, emb.has_image)
            loss = info_nce(fused.scores, model.logit_scale.detach(), masks.ignore | extra, symmetric=False)
            loss.backward()
            grads[kind] += model.fusion.type_logit.grad.detach().cpu()
        w = fused.image_weight.detach().cpu()  # (B, Bp)
        in_type = same & inputs["has_image"].cpu()[None, :]
        for k in range(n_types):
            cell = in_type & (types[None, :] == k)
            weights_sum[k] += w[cell].sum()
            weights_n[k] += cell.sum()
    groups = store.type_groups()
    group_of = {t: g for g, ts in groups.items() for t in ts}
    rows, payload = [], {}
    for k, name in enumerate(model.types):
        if name not in group_of:
            continue
        wk = float(weights_sum[k] / weights_n[k]) if weights_n[k] else float("nan")
        entry = {
            "group": group_of[name],
            "image_weight_in_type": wk,
            **{f"grad_{g}": float(v[k]) for g, v in grads.items()},
        }
        payload[name] = entry
        rows.append(
            [
                name,
                group_of[name],
                f"{wk:.2f}",
                f"{entry['grad_same']:+.4f}",
                f"{entry['grad_other']:+.4f}",
                f"{entry['grad_all']:+.4f}",
            ]
        )
    share = sum(same_share) / len(same_share)
    meta = {"command": command_line(), "machine": machine_info()}
    md = [
        f"# Gate gradient by negative type ({', '.join([args.storefront, *args.overrides])})",
        "",
        *run_header(meta),
        f"Checkpoint `{args.checkpoint}`; {args.batches} training batches of epoch 0's order. Share of in-batch "
        f"negatives of the row's own type: {share:.3f}.",
        "",
        "Gradient of the query-fused InfoNCE term (query -> product) on each type's gate logit, summed over the "
        "batches: from same-type negatives only, other-type negatives only, and all. Negative: more image weight "
        "lowers the loss. Image weight: the trained gate's mean on in-type (query, product) cells of the batches.",
        "",
        md_table(
            ["type", "group", "image weight", "grad (same-type negs)", "grad (other-type negs)", "grad (all)"], rows
        ),
        "",
    ]
    write_results(
        args.out,
        args.stem or f"gate_gradient_{args.storefront}",
        md,
        {**meta, "same_type_share": share, "types": payload},
    )
    print("\n".join(md))


if __name__ == "__main__":
    main()
