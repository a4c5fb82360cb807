"""The notebook's scale on an accelerator: every stage timed, and bf16 autocast against fp32.

``--workload lm-0.5b`` runs a 0.5B-class Llama-shaped causal LM (random init, Qwen2-0.5B's
widths) on 1,000 documents × 100 queries of 512 tokens instead, its MLP blocks tracked.

DistilBERT-base (random init, fixed seed), 512-token padded reviews of random lengths,
100 train x 100 test, the FFN + pre_classifier + classifier layers, a four-value sweep.
Prints each stage's time for fp32 and for bf16 autocast, the floor of the same run
(plain forward+backward passes and float64 eigendecompositions), peak device memory,
and the agreement of the bf16 influences with the fp32 ones (Pearson, Spearman).
Needs only torch and transformers, so that it runs on a bare GPU machine:

    python benchmarks/gpu.py --device cuda [--json OUT.json]

``--scale full`` runs the pipeline itself (``run_pipeline``, store and all) at the full scale
of the notebook's setup instead: DistilBERT-base (random init) and its default layers (the 12
FFN matrices, pre_classifier and classifier: 14), 25,000 train × 1,000 test reviews of 512
tokens at most (synthetic texts of random lengths; the real IMDB folder holds only 10,000),
the five-value sweep, clean and corrupted labels; every stage's time from the store's own
records, the query chunks, the peak device memory. ``--scale small`` is the same on a tiny
stand-in, to try it on a CPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import StageTimer, plain_passes, synchronized, timed  # noqa: E402
from workloads import WORKLOADS, build_batches, build_model, tracked_parameters  # noqa: E402

from influence import EkfacInfluence  # noqa: E402

NOTEBOOK = replace(WORKLOADS["base"], name="notebook", seq=512, train=100, test=100, batch=8)
SWEEP = [1e-15, 1e-9, 1e-5, 1.0]  # the notebook appendix's values
MAIN_REGULARIZATION = 1e-5
GPU_CACHE_BYTES = 48 * 2**30
# Test gradients held at once where all of them would not fit an H200: lm-0.5b's 100 queries are 125 GB.
QUERY_BYTES = {"lm-0.5b": 32 * 2**30}


def run_engine(
    model, tracked, train, test, device, autocast: str | None, query_bytes: int | None = None
) -> tuple[dict[str, float], torch.Tensor]:
    """All stages; returns the seconds per stage and the scores (λ, n_test, n_train). With ``query_bytes``
    the queries come in chunks through the public API (one "queries + scores" time)."""
    cache_bytes = GPU_CACHE_BYTES if device.type == "cuda" else 2 * 2**30
    engine = EkfacInfluence(model, tracked, autocast=autocast, cache_bytes=cache_bytes, query_bytes=query_bytes)
    timer = StageTimer(sync=synchronized(device))
    engine.fit(train, journal=timer)
    if query_bytes is not None:
        sweep = timer.time("queries + scores", engine.explore_hessian_regularization, test, train, SWEEP)
        return timer.seconds, torch.stack([sum(sweep[reg].values()) for reg in SWEEP])
    queries = timer.time("queries", engine.query_gradients, test)
    blocks = timer.time("scores", lambda: list(engine.iter_scores(queries, train, SWEEP, cache=engine.train_cache)))
    scores = torch.cat([b.total[0] for b in blocks], dim=-1)  # (λ, n_test, n_train)
    return timer.seconds, scores


def ranks(values: torch.Tensor) -> torch.Tensor:
    order = values.argsort()
    result = torch.empty_like(values)
    result[order] = torch.arange(len(values), dtype=values.dtype, device=values.device)
    return result


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten().double(), b.flatten().double()]))[0, 1])


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    return pearson(ranks(a.flatten().double()), ranks(b.flatten().double()))


FULL = {"full": (25_000, 1_000, 512, 32), "small": (96, 12, 64, 8)}  # n_train, n_test, max tokens, batch
BASE_WIDTHS = {
    "full": dict(dim=768, layers=6, heads=12, hidden=3072),
    "small": dict(dim=32, layers=2, heads=2, hidden=64),
}
SYNTHETIC_VOCABULARY = 5_000
SYNTHETIC_SEED = 11


def synthetic_reviews(folder: Path, n_train: int, n_test: int, max_tokens: int) -> Path:
    """train.csv and test.csv of random words, lengths uniform up to ``max_tokens``, random labels."""
    import numpy as np

    rng = np.random.default_rng(SYNTHETIC_SEED)
    words = [f"w{i}" for i in range(SYNTHETIC_VOCABULARY)]
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", n_train), ("test", n_test)):
        with open(folder / f"{split}.csv", "w") as out:
            out.write("text,label\n")
            for _ in range(count):
                length = int(rng.integers(8, max_tokens - 2))
                out.write(" ".join(rng.choice(words, length)) + f",{int(rng.integers(2))}\n")
    return folder


def full_scale(scale: str, device: torch.device, autocast: str | None) -> None:
    """The pipeline end to end at the notebook's full scale (or its small stand-in)."""
    import tempfile
    import time

    from influence.demo.model import DemoSettings, build_model, build_tokenizer
    from influence.pipeline import run_pipeline
    from job.config import RunConfig
    from job.options import EngineOptions
    from store.reader import StoreReader

    n_train, n_test, max_tokens, batch = FULL[scale]
    with tempfile.TemporaryDirectory() as work:
        data = synthetic_reviews(Path(work) / "reviews", n_train, n_test, max_tokens)
        settings = replace(DemoSettings(vocab_size=SYNTHETIC_VOCABULARY + 10), **BASE_WIDTHS[scale])
        tokenizer = build_tokenizer([" ".join(f"w{i}" for i in range(SYNTHETIC_VOCABULARY))] * 2, max_tokens, settings)
        torch.manual_seed(SYNTHETIC_SEED)
        model = build_model(len(tokenizer), ["negative", "positive"], max_tokens, settings)
        model.save_pretrained(Path(work) / "model")
        tokenizer.save_pretrained(Path(work) / "model")
        config = RunConfig(
            model=str(Path(work) / "model"),
            dataset=str(data),
            num_train=n_train,
            num_test=n_test,
            max_length=max_tokens,
            batch_size=batch,
            device=str(device),
            engine=EngineOptions(autocast=autocast),
            store=str(Path(work) / "store.h5"),
        ).validate()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        started = time.perf_counter()
        run_pipeline(config)
        wall = time.perf_counter() - started
        with StoreReader(config.store_path()) as reader:
            records, layout = reader.stages(), reader.layout
            size = config.store_path().stat().st_size
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    layers = len(layout.layers)
    print(f"{scale} scale: {n_train} train x {n_test} test, {max_tokens} tokens, batch {batch}, {layers} layers")
    print(f"{layout.n_tiles} query tiles of {layout.tile_rows} rows; autocast {autocast or 'none'}; device {device}")
    for key, record in records.items():
        print(f"{key:<32}{record.elapsed:>10.1f} s")
    print(f"{'wall (load, tokenize, stages)':<32}{wall:>10.1f} s")
    print(f"peak device memory {peak:.1f} GiB; store {size / 2**30:.1f} GiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--scale", choices=sorted(FULL), help="the pipeline at the notebook's full scale")
    parser.add_argument("--autocast", choices=["bf16"], help="with --scale: forward passes in bf16")
    parser.add_argument("--small", action="store_true", help="a tiny stand-in workload, to try the script on a CPU")
    parser.add_argument("--workload", choices=["notebook", *sorted(WORKLOADS)], default="notebook")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.scale:
        full_scale(args.scale, device, args.autocast)
        return
    workload = NOTEBOOK if args.workload == "notebook" else WORKLOADS[args.workload]
    if args.small:
        workload = replace(WORKLOADS["lm-tiny" if workload.kind == "causal-lm" else "tiny"], train=16, test=8)
    tracked = workload.tracked
    model = build_model(workload).to(device)
    train = build_batches(workload, workload.train, seed=1)
    test = build_batches(workload, workload.test, seed=2)
    sync = synchronized(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(
        f"{workload.name}: dim {workload.dim}, {workload.layers} layers, seq {workload.seq}, "
        f"{workload.train} train x {workload.test} test, batch {workload.batch}, "
        f"{tracked_parameters(model, tracked):,} tracked parameters; sweep {SWEEP}"
    )
    print(f"device: {name}; torch {torch.__version__}")

    plain_passes(model, train[:1], tracked)  # warm-up (kernels, allocator)
    for autocast in (None, "bf16"):
        run_engine(model, tracked, train[:1], test[:1], device, autocast)
    _, floor_train = timed(plain_passes, model, train, tracked, sync=sync)
    _, floor_test = timed(plain_passes, model, test, tracked, sync=sync)

    results = {}
    for label, autocast in (("fp32", None), ("bf16", "bf16")):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        stages, scores = run_engine(model, tracked, train, test, device, autocast, QUERY_BYTES.get(workload.name))
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
        results[label] = {"stages": stages, "total": sum(stages.values()), "peak_gib": peak, "scores": scores}

    eigen_floor = results["fp32"]["stages"]["eigendecomposition"]
    floor = 3 * floor_train + floor_test + eigen_floor
    print(f"\n{'stage':<24}{'fp32 s':>10}{'bf16 s':>10}")
    for stage in results["fp32"]["stages"]:
        print(f"{stage:<24}{results['fp32']['stages'][stage]:>10.2f}{results['bf16']['stages'][stage]:>10.2f}")
    print(f"{'total':<24}{results['fp32']['total']:>10.2f}{results['bf16']['total']:>10.2f}")
    print(f"{'peak memory GiB':<24}{results['fp32']['peak_gib']:>10.1f}{results['bf16']['peak_gib']:>10.1f}")
    print(
        f"floor (fp32): 3 x train pass {floor_train:.2f} + test pass {floor_test:.2f} + eigh {eigen_floor:.2f} "
        f"= {floor:.2f} s; total/floor {results['fp32']['total'] / floor:.2f}"
    )
    agreement = {}
    print(f"\n{'λ':>8}  {'Pearson bf16~fp32':>18}  {'Spearman':>9}  finite fp32/bf16")
    for k, reg in enumerate(SWEEP):
        a, b = results["fp32"]["scores"][k], results["bf16"]["scores"][k]
        finite = bool(torch.isfinite(a).all()), bool(torch.isfinite(b).all())
        agreement[str(reg)] = {"pearson": pearson(a, b), "spearman": spearman(a, b), "finite": finite}
        print(f"{reg:>8g}  {agreement[str(reg)]['pearson']:>18.5f}  {agreement[str(reg)]['spearman']:>9.5f}  {finite}")
    if args.json:
        figures = {label: {k: v for k, v in r.items() if k != "scores"} for label, r in results.items()}
        figures.update(
            device=name, torch=torch.__version__, floor=floor, agreement=agreement, workload=workload.__dict__
        )
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
