"""``oemdm``: train, evaluate, sample from and compare masked diffusion language models.

    oemdm train                      # LoMDM, tiny preset, embedded Shakespeare, CPU: a few minutes
    oemdm train --model mdlm --steps 2000 --lr 5e-4
    oemdm train --resume runs/NAME   # continue exactly where it stopped
    oemdm eval runs/NAME [--text FILE] [--split test]
    oemdm sample runs/NAME --num 4 --sampler first-hitting
    oemdm compare                    # MDLM, GenMD4, BD3LM, AR, LoMDM on the same data/steps/seed
    oemdm plot runs/NAME
    oemdm bench --out DIR            # GPU acceptance benchmark (oemdm_spec/fast/bench.py)

Bad input exits with code 2 and a message on stderr.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

DESCRIPTION = """\
Order-expressive masked diffusion (OeMDM) and learnable-order MDM (LoMDM), arXiv 2602.02112.

`oemdm train` with no arguments trains LoMDM (learned generation order) on the embedded Shakespeare corpus
with the CPU-sized `tiny` preset and prints the validation NELBO bound, a sample rendered with its
generation order, and where the checkpoint, logs and plots went (runs/<timestamp>-lomdm/).
Every training setting is a `--key value` override: see `oemdm train --help`.
"""


class UsageError(Exception):
    """Bad command-line input: exit code 2."""


def _fail(msg: str) -> int:
    print(f"oemdm: error: {msg}", file=sys.stderr)
    return 2


# ----------------------------------------------------------------------------------------------------------
# shared helpers


def load_run(path: str, use_ema: bool = True):
    """(model, config, tokenizer, checkpoint dir) from a run directory or checkpoint; bad input → UsageError."""
    from oemdm_spec.fast.checkpoint import load_run as load

    try:
        return load(path, use_ema=use_ema)
    except (FileNotFoundError, ValueError, TypeError) as e:  # CheckpointError and ConfigError are ValueErrors
        raise UsageError(str(e)) from None


def unit_for(tokenizer_name: str) -> str:
    return "char" if tokenizer_name == "char" else "token"


def draw_and_render(model, tok, cfg, out_png: Path, *, num: int, seed: int, sampler: str = "first-hitting",
                    steps: int = 0, init=None, length: int | None = None) -> tuple[str, float]:
    """Draw samples, write the order heatmap PNG; return the first sample rendered with its order."""
    from oemdm_spec.fast.plots import plot_order_heatmap
    from oemdm_spec.fast.sample import render_with_order, sample, sample_entropy

    tokens, order = sample(model, num, length=length, sampler=sampler, steps=steps, seed=seed, init=init)
    pieces = [[tok.decode([int(i)]) for i in row] for row in tokens]
    texts = ["".join(p) for p in pieces] if cfg.tokenizer == "char" else None
    try:
        plot_order_heatmap(order, out_png, texts=texts, title=f"{cfg.model}: generation order ({sampler})")
    except OSError as e:
        raise UsageError(f"cannot write {str(out_png)!r}: {e.strerror or e}") from None
    ent = sample_entropy(tokens)
    return render_with_order(pieces[0], order[0].tolist()), ent


# ----------------------------------------------------------------------------------------------------------
# commands


def cmd_train(args: argparse.Namespace, extra: list[str]) -> int:
    from oemdm_spec.fast.checkpoint import CheckpointError
    from oemdm_spec.fast.config import ConfigError, build_config, parse_overrides
    from oemdm_spec.fast.evaluate import NonFiniteBound
    from oemdm_spec.fast.plots import plot_order_stats, plot_training
    from oemdm_spec.fast.trainer import OutputError, TrainingDiverged, train

    try:
        overrides = parse_overrides(extra)
        cfg = None if args.resume else build_config(overrides)
    except ConfigError as e:
        return _fail(str(e))
    try:
        res = train(cfg, resume=args.resume, overrides=overrides if args.resume else None,
                    overwrite=args.overwrite)
    except (ConfigError, CheckpointError, FileNotFoundError, TrainingDiverged, OutputError, NonFiniteBound) as e:
        return _fail(str(e))
    if res.note is not None:  # a resume with nothing to do
        print(f"[oemdm] {res.note}", file=sys.stderr)
        return 0
    if res.interrupted is not None:
        import signal

        print(f"[oemdm] {res.interrupted}: stopped at step {res.final_step} of {res.config.steps}; checkpoint in "
              f"{res.run_dir / 'checkpoints'}. Continue with: oemdm train --resume {res.run_dir}", file=sys.stderr)
        return 128 + int(signal.Signals[res.interrupted])  # the shell's convention for death by a signal
    if res.eval is None:  # non-zero DDP ranks
        return 0
    cfg = res.config
    unit = unit_for(cfg.tokenizer)
    run = res.run_dir
    try:
        plot_training(run / "log.csv", run / "training.png", title=f"{cfg.model} ({cfg.preset})")
    except (OSError, ValueError) as e:
        return _fail(f"cannot draw {run / 'training.png'}: {e}")
    pngs = [run / "training.png"]
    order_logged = res.model.process.order_stats
    if order_logged and plot_order_stats(run / "order_stats.csv", run / "order_stats.png"):
        pngs.append(run / "order_stats.png")
    model = res.ema if res.ema is not None else res.model
    import torch

    with torch.no_grad():
        rendered, ent = draw_and_render(model.cpu(), res.tokenizer, cfg, run / "order_heatmap.png",
                                        num=cfg.num_samples, seed=cfg.seed, length=cfg.sample_len)
    pngs.append(run / "order_heatmap.png")
    ev = res.eval
    print()
    print(f"== {cfg.model} trained {res.final_step} steps in {res.wall_s / 60:.1f} min "
          f"({res.tokens_per_s:,.0f} tokens/s) ==")
    print(f"validation bound ({ev.n_tokens} {unit}s, EMA weights):")
    print(f"  NELBO <= {ev.bits:.4f} ± {ev.se / math.log(2):.4f} bits/{unit}   "
          f"({ev.nelbo:.4f} nats/{unit});  perplexity <= {ev.perplexity:.3f}")
    print(f"  estimator: {ev.estimator}")
    print(f"sample (first-hitting sampler, float64; digit row = decile of the unmask step, 0 = first; "
          f"sample entropy {ent:.3f} nats):")
    print(rendered)
    print(f"checkpoint: {run / 'checkpoints'}")
    print(f"logs:       {run / 'log.csv'}" + (f", {run / 'order_stats.csv'}" if order_logged else "")
          + f", {run / 'summary.json'}, {run / 'config.json'}")
    print("plots:      " + ", ".join(str(p) for p in pngs))
    return 0


def _check_sizes(args: argparse.Namespace, minimum: dict[str, int], maximum: dict[str, int] | None = None) -> None:
    """Integer options with a range (a clear message instead of a traceback, a silent 0 bound, or minutes of
    work before running out of memory)."""
    for name, low in minimum.items():
        value = getattr(args, name)
        if value < low:
            raise UsageError(f"--{name.replace('_', '-')} must be >= {low}, got {value}")
    for name, high in (maximum or {}).items():
        value = getattr(args, name)
        if value > high:
            raise UsageError(f"--{name.replace('_', '-')} must be <= {high:,}, got {value}")


# upper bounds of the eval/sample options (docs/reliability.md): beyond them a command runs for hours or
# cannot hold its output; samples are drawn in chunks of SAMPLE_CHUNK sequences
MAX_REPEATS = 1000
MAX_SAMPLES = 10_000
MAX_LENGTH_FACTOR = 16  # --length <= 16 x the model's seq_len
MAX_GRID_STEPS_FACTOR = 64  # grid --steps <= 64 x the length
SAMPLE_CHUNK = 64


def _eval_split(cfg, tok, data: str, split: str):
    """The split to evaluate a run on: any corpus its tokenizer fits, through the same protocol machinery."""
    from dataclasses import replace

    from oemdm_spec.data.loading import build_datasets, is_task

    other = data != cfg.data
    if other and is_task(data) != is_task(cfg.data):
        raise UsageError(f"--data {data!r}: the run was trained on {cfg.data!r}; task data and text corpora "
                         "do not share a vocabulary")
    # another corpus keeps the run's tokenizer and length, with that corpus's own protocol
    ecfg = replace(cfg, data=data, protocol="" if other else cfg.protocol)
    try:
        got_tok, ds = build_datasets(ecfg, splits=(split,))
    except (ValueError, OSError, ImportError) as e:
        raise UsageError(f"--data {data!r} --split {split}: {e} (evaluate on other text with --text FILE or "
                         "--data SPEC)") from None
    if got_tok.vocab_size != tok.vocab_size:
        raise UsageError(f"--data {data!r}: vocabulary {got_tok.vocab_size} does not match the run's {tok.vocab_size}")
    return ds


def cmd_eval(args: argparse.Namespace, extra: list[str]) -> int:
    if extra:
        return _fail(f"unexpected arguments for eval: {' '.join(extra)}")
    _check_sizes(args, {"repeats": 1, "batch_size": 1, "max_batches": 0},
                 {"repeats": MAX_REPEATS, "batch_size": 1 << 20})
    from oemdm_spec.data import PackedDataset
    from oemdm_spec.fast.evaluate import NonFiniteBound, evaluate_bound

    model, cfg, tok, ck = load_run(args.run, use_ema=not args.no_ema)
    stats = None
    if args.text:
        p = Path(args.text)
        if not p.is_file():
            return _fail(f"--text: no such file {args.text!r}")
        try:
            text = p.read_text(encoding="utf-8")
            ids = tok.encode(text)
        except (ValueError, KeyError, UnicodeDecodeError) as e:
            return _fail(f"--text: cannot tokenize with the run's {cfg.tokenizer!r} tokenizer: {e}")
        if len(ids) < cfg.seq_len:
            return _fail(f"text has {len(ids)} tokens, fewer than seq_len={cfg.seq_len}")
        ds = PackedDataset(ids, cfg.seq_len)
        batches = ds.iter_eval_batches(args.batch_size)
        source = str(p)
        n_used = len(ds) * cfg.seq_len
        stats = {"chars_per_token": len(text) * (n_used / len(ids)) / n_used,
                 "bytes_per_token": len(text.encode("utf-8")) * (n_used / len(ids)) / n_used}
    else:
        data = args.data or cfg.data
        ds = _eval_split(cfg, tok, data, args.split)
        padded = getattr(ds, "pad_id", None) is not None
        batches = ds.iter_eval_batches(args.batch_size, **({"with_valid": True} if padded else {}))
        source = f"{data}:{args.split}"
        if hasattr(ds, "text_stats"):
            stats = ds.text_stats()
    try:
        ev = evaluate_bound(model, batches, seed=args.seed, repeats=args.repeats,
                            max_batches=args.max_batches or None)
    except NonFiniteBound as e:
        return _fail(f"{ck}: {e}")
    unit = unit_for(cfg.tokenizer)
    print(f"{cfg.model} @ {ck} on {source}")
    print(ev.describe(unit))
    if unit != "char" and stats:
        for name, key in (("char", "chars_per_token"), ("byte", "bytes_per_token")):
            if stats.get(key):
                per = stats[key]
                print(f"  = {ev.bits / per:.4f} bits/{name} ({per:.3f} {name}s per token)")
    print(f"estimator: {ev.estimator}; seed {args.seed}, repeats {args.repeats}")
    return 0


def parse_infill(text: str, tok, placeholder: str):
    """A string where ``placeholder`` characters are positions to generate (char tokenizer)."""
    import torch

    ids = []
    m = tok.vocab_size
    for ch in text:
        ids.append(m if ch == placeholder else tok.encode(ch)[0])
    return torch.tensor(ids)[None]


def cmd_sample(args: argparse.Namespace, extra: list[str]) -> int:
    if extra:
        return _fail(f"unexpected arguments for sample: {' '.join(extra)}")
    from oemdm_spec.fast.processes.base import ADAPTIVE_SAMPLERS, SAMPLERS

    if args.sampler not in SAMPLERS + ADAPTIVE_SAMPLERS:
        return _fail(f"--sampler must be one of {', '.join(SAMPLERS + ADAPTIVE_SAMPLERS)}, got {args.sampler!r}")
    _check_sizes(args, {"num": 1, "length": 0, "steps": 0}, {"num": MAX_SAMPLES})
    if args.out:
        outp = Path(args.out)
        if outp.suffix.lower() != ".png":
            return _fail(f"--out must name a .png file, got {args.out!r}")
        if not outp.parent.is_dir():
            return _fail(f"--out: the directory {str(outp.parent)!r} does not exist")
    model, cfg, tok, ck = load_run(args.run)
    if args.sampler not in model.process.samplers:
        return _fail(f"--sampler {args.sampler!r} is not defined for model {cfg.model}; use one of "
                     f"{', '.join(model.process.samplers)}")
    init = None
    length = args.length or cfg.seq_len
    if length > MAX_LENGTH_FACTOR * cfg.seq_len:
        return _fail(f"--length must be <= {MAX_LENGTH_FACTOR} x the model's seq_len ({cfg.seq_len}) = "
                     f"{MAX_LENGTH_FACTOR * cfg.seq_len}, got {length}")
    if args.infill:
        if cfg.tokenizer != "char":
            return _fail("--infill needs a char-tokenizer run")
        try:
            init = parse_infill(args.infill, tok, args.placeholder).repeat(args.num, 1)
        except (ValueError, KeyError, IndexError) as e:
            return _fail(f"--infill: {e}")
        length = init.shape[1]
    if args.steps > MAX_GRID_STEPS_FACTOR * length:
        return _fail(f"--steps must be <= {MAX_GRID_STEPS_FACTOR} x the length ({length}) = "
                     f"{MAX_GRID_STEPS_FACTOR * length}, got {args.steps}")
    out = Path(args.out) if args.out else ck.parent.parent / "samples_order.png"
    from oemdm_spec.fast.plots import plot_order_heatmap
    from oemdm_spec.fast.sample import render_with_order, sample, sample_entropy

    # streamed: chunks of SAMPLE_CHUNK sequences (chunk c uses seed + c; one chunk is exactly the one-call
    # result), each printed as it is drawn; the heatmap shows the first chunk
    first_order, first_texts, ent_sum = None, None, 0.0
    for c, lo in enumerate(range(0, args.num, SAMPLE_CHUNK)):
        n = min(SAMPLE_CHUNK, args.num - lo)
        tokens, order = sample(model, n, length=length, sampler=args.sampler, steps=args.steps,
                               seed=args.seed + c, init=None if init is None else init[lo:lo + n])
        for i, row in enumerate(tokens):
            pieces = [tok.decode([int(j)]) for j in row]
            print(f"--- sample {lo + i} ---")
            print(render_with_order(pieces, order[i].tolist()), flush=True)
        ent_sum += sample_entropy(tokens) * n
        if first_order is None:
            first_order = order
            first_texts = (["".join(tok.decode([int(j)]) for j in row) for row in tokens]
                           if cfg.tokenizer == "char" else None)
    try:
        plot_order_heatmap(first_order, out, texts=first_texts,
                           title=f"{cfg.model}: generation order ({args.sampler})")
    except OSError as e:  # a read-only run directory, a vanished --out directory
        return _fail(f"cannot write the heatmap {str(out)!r}: {e.strerror or e}")
    print(f"sample entropy: {ent_sum / args.num:.3f} nats (token-histogram entropy per sample, mean)")
    print(f"order heatmap: {out}")
    return 0


def cmd_compare(args: argparse.Namespace, extra: list[str]) -> int:
    from oemdm_spec.fast.compare import run_compare
    from oemdm_spec.fast.config import ConfigError, parse_overrides

    try:
        overrides = parse_overrides(extra)
        return run_compare(args.models.split(","), overrides, out=args.out, overwrite=args.overwrite)
    except ConfigError as e:
        return _fail(str(e))


def cmd_plot(args: argparse.Namespace, extra: list[str]) -> int:
    if extra:
        return _fail(f"unexpected arguments for plot: {' '.join(extra)}")
    from oemdm_spec.fast.plots import plot_order_stats, plot_training

    run = Path(args.run)
    if not (run / "log.csv").exists():
        return _fail(f"no log.csv in {args.run!r} (expected a run directory)")
    try:
        outs = [plot_training(run / "log.csv", run / "training.png", title=run.name)]
        if (run / "order_stats.csv").exists():
            p = plot_order_stats(run / "order_stats.csv", run / "order_stats.png")
            if p:
                outs.append(p)
    except ValueError as e:  # a garbled log
        return _fail(str(e))
    except OSError as e:  # a read-only run directory
        return _fail(f"cannot write the plots into {args.run!r}: {e.strerror or e}")
    for p in outs:
        print(p)
    return 0


def cmd_bench(args: argparse.Namespace, extra: list[str]) -> int:
    """GPU benchmarks: everything after ``bench`` goes to the one parser of :mod:`oemdm_spec.fast.bench`."""
    from oemdm_spec.fast.bench import main as bench_main

    try:
        return bench_main(extra)
    except SystemExit as e:  # its argparse: --help (0) or a usage error (2)
        return int(e.code or 0)


# ----------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from oemdm_spec.fast.config import config_help

    p = argparse.ArgumentParser(prog="oemdm", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Run `oemdm COMMAND --help` for the options of each command.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    tr = sub.add_parser("train", help="train a model (default: LoMDM, tiny preset, ~5 min on CPU)",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        description="Train a model. Any config key can be overridden with --key value.",
                        epilog="config keys (default with the tiny preset, meaning):\n" + config_help())
    tr.add_argument("--resume", metavar="RUN", help="continue a run directory exactly where it stopped")
    tr.add_argument("--overwrite", action="store_true",
                    help="replace an existing run directory of the same --name (its contents are deleted)")
    ev = sub.add_parser("eval", help="NELBO bound and perplexity bound with MC standard error")
    ev.add_argument("run", help="run directory or checkpoint directory")
    ev.add_argument("--text", help="evaluate zero-shot on this text file instead of a corpus split")
    ev.add_argument("--data", help="evaluate zero-shot on this corpus (any --data spec of `oemdm train`) with the "
                                   "run's tokenizer; default: the run's own data")
    ev.add_argument("--split", default="validation", choices=["train", "validation", "test"])
    ev.add_argument("--seed", type=int, default=1234)
    ev.add_argument("--repeats", type=int, default=1, help="antithetic MC pairs per sequence")
    ev.add_argument("--batch-size", type=int, default=64)
    ev.add_argument("--max-batches", type=int, default=0, help="0: the whole split")
    ev.add_argument("--no-ema", action="store_true", help="use the raw weights, not the EMA")
    sa = sub.add_parser("sample", help="draw samples (float64), print them with their order, write a heatmap")
    sa.add_argument("run")
    sa.add_argument("--num", type=int, default=4)
    sa.add_argument("--sampler", default="first-hitting",
                    help="first-hitting, grid, topk; adaptive: confidence, margin, entropy")
    sa.add_argument("--steps", type=int, default=0, help="grid sampler steps (0: L)")
    sa.add_argument("--length", type=int, default=0)
    sa.add_argument("--seed", type=int, default=0)
    sa.add_argument("--infill", help="text with placeholder chars marking the positions to generate")
    sa.add_argument("--placeholder", default="_")
    sa.add_argument("--out", help="heatmap PNG path (default: RUN/samples_order.png)")
    co = sub.add_parser("compare", help="train MDLM, GenMD4, BD3LM, AR, LoMDM alike; table + plots",
                        description="Train several model types on the same data, steps and seed; extra "
                                    "--key value overrides apply to all of them.")
    co.add_argument("--models", default="mdlm,genmd4,bd3lm,ar,lomdm",
                    help="comma-separated; also lomdm-const (the w ≡ c1 control), lomdm-logspace (the "
                         "sharper order parametrisation) and mdlm-k2 (MDLM's schedule on K masks per sequence, "
                         "as LoMDM trains)")
    co.add_argument("--out", default="", help="output directory (default runs/compare-<timestamp>)")
    co.add_argument("--overwrite", action="store_true",
                    help="replace the model directories of an earlier compare in --out (default: refuse)")
    pl = sub.add_parser("plot", help="redraw the PNG plots of a run from its CSV logs")
    pl.add_argument("run")
    sub.add_parser("bench", add_help=False,  # `oemdm bench --help` is the help of oemdm_spec.fast.bench
                   help="GPU acceptance benchmark (--smoke: CPU smoke run); see `oemdm bench --help`")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2)
        return int(e.code or 0)
    handlers = {"train": cmd_train, "eval": cmd_eval, "sample": cmd_sample, "compare": cmd_compare,
                "plot": cmd_plot, "bench": cmd_bench}
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return handlers[args.command](args, extra)
    except UsageError as e:
        return _fail(str(e))


if __name__ == "__main__":
    sys.exit(main())
