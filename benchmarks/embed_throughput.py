"""Catalogue embedding throughput of the streaming encoder (``querylife embed``'s batches) against its floor.

Three timings over the same catalogue rows, in the same batches, with the real all-MiniLM-L6-v2 text tower and the
small CNN vision tower (heads untrained: speed does not depend on the weights):

* **encoder**: :func:`querylife.encode.iter_product_batches` end to end: image decoding (overlapped with encoding),
  both towers, projection heads, index vectors;
* **bare towers**: the text tower and the vision tower's forward alone on the same batches, images already decoded;
* **sentence-transformers**: ``SentenceTransformer.encode`` of the same titles, same batch size, on the same
  MiniLM weights, against our text path alone (tower + projection).

Example:
    python benchmarks/embed_throughput.py --products 2000 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from benchkit import quiet_transformers, run_header, write_results

from querylife.config import DataConfig
from querylife.data.images import load_images
from querylife.data.storefront import DemoConfig, generate_demo
from querylife.encode import image_size_of, iter_product_batches, load_catalogue
from querylife.model import ModelConfig, QueryLifeModel
from querylife.runinfo import command_line, machine_info
from querylife.towers import SmallCNNConfig, TowerConfig, bundled_minilm_path


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--products", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--work", type=Path, default=None, help="Folder for the storefront (default: a temp dir).")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    quiet_transformers()
    work = args.work or Path(tempfile.mkdtemp(prefix="embed_bench_"))
    store = generate_demo(work / "demo", DemoConfig(n_products=args.products, seed=0), progress=False)
    catalogue = load_catalogue(DataConfig(catalog=str(store.catalog_path)))
    types = sorted(set(catalogue.table["product_type"]))
    model = QueryLifeModel(ModelConfig(tower=TowerConfig(small_cnn=SmallCNNConfig(image_size=64)),
                                       product_types=types)).eval()
    size = image_size_of(model)
    bs = args.batch_size
    n = len(catalogue)
    batches = [np.arange(s, min(s + bs, n)) for s in range(0, n, bs)]
    paths = catalogue.image_paths
    decoded = [load_images([paths[r] for r in b], size) for b in batches]  # for the bare-tower floor only

    def encoder() -> None:
        for _ in iter_product_batches(model, catalogue, batch_size=bs):
            pass

    @torch.no_grad()
    def bare() -> None:
        for b, (images, has) in zip(batches, decoded, strict=True):
            model.text_tower([catalogue.texts[r] for r in b])
            model.vision_tower(images[has])

    @torch.no_grad()
    def ours_text() -> None:
        for b in batches:
            model.project_titles(model.text_features([catalogue.texts[r] for r in b]))

    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(bundled_minilm_path()), device="cpu")
    st.max_seq_length = model.text_tower.max_length  # same truncation as our tower

    def st_text() -> None:
        st.encode(catalogue.texts, batch_size=bs, show_progress_bar=False)

    encoder()  # warm-up (first-call allocations, tokenizer caches)
    t_enc = best_of(args.repeats, encoder)
    t_bare = best_of(args.repeats, bare)
    t_ours = best_of(args.repeats, ours_text)
    t_st = best_of(args.repeats, st_text)
    rows = {
        "products": n, "with_image": int(sum(int(h.sum()) for _, h in decoded)), "batch_size": bs,
        "encoder_products_per_s": n / t_enc, "bare_towers_products_per_s": n / t_bare,
        "ratio_encoder_to_bare": t_bare / t_enc,
        "our_text_products_per_s": n / t_ours, "sentence_transformers_products_per_s": n / t_st,
        "ratio_ours_to_sentence_transformers": t_st / t_ours,
    }
    for k, v in rows.items():
        print(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}", flush=True)
    meta = {"command": command_line(), "machine": machine_info(["sentence-transformers"]),
            "args": {k: str(v) for k, v in vars(args).items()}}
    md = ["# Embedding throughput (streaming encoder)", "", *run_header(meta), "",
          f"{n} demo products ({rows['with_image']} with an image, 64 px), batch {bs}, all-MiniLM-L6-v2 text tower, "
          f"small CNN vision tower; best of {args.repeats}.", "",
          "| path | products / s | ratio |", "|---|---|---|",
          f"| encoder (decode + towers + heads + index vectors) | {rows['encoder_products_per_s']:.0f} | "
          f"{rows['ratio_encoder_to_bare']:.3f} of the bare towers |",
          f"| bare towers (text + vision forward, images pre-decoded) | {rows['bare_towers_products_per_s']:.0f} | 1 |",
          f"| our text path (tower + projection) | {rows['our_text_products_per_s']:.0f} | "
          f"{rows['ratio_ours_to_sentence_transformers']:.3f} x sentence-transformers |",
          f"| sentence-transformers encode (same MiniLM, same batches) | "
          f"{rows['sentence_transformers_products_per_s']:.0f} | 1 |"]
    path = write_results(args.out, "embed_throughput", md, {"meta": meta, "results": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
