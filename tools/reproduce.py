"""Reproduce the paper's Tables 2, 3 and 5 at tiny scale on this CPU.

Per architecture (SRResNet: Table 2; EDSR-baseline: Table 3), one full-precision
tiny x2 model (16 channels, 2 blocks) is trained on procedural images, then
fine-tuned fully quantized at 8/8/32, 8/8/8, 6/6/8, 4/4/32 and 4/4/8, and the
ablation of Table 5 at 4/4/32: neither DAIA nor SQCL (intervals start at 1 and
train), DAIA only, DAIA + SQCL. Every model and bicubic are scored on the bundled
photographs (never trained on). Writes OUT/results.md (the tables beside the
paper's Set5 rows, and which of the paper's orderings hold) and
OUT/results_<arch>.png (gain over bicubic, ours and the paper's); OUT is --out
(runs/reproduce), or --docs DIR: `--docs docs` replaces the tracked docs/results.md.

    python tools/reproduce.py [--arch srresnet edsr] [--fp-steps 6000] [--steps 10000]

With the defaults (the --tiny recipe: batch 8 of 12x12 LR patches, and the 10 000
fine-tuning steps of its low-bit preset) it takes about 32 minutes on a 2-core CPU
with `--jobs 2` (the two architectures at once, one core each);
checkpoints go to --out/<arch> and a finished run is reused when the script is
started again. OpenBLAS runs one thread per process (`import fqsr_ref` sets it,
whatever was imported first; set OPENBLAS_NUM_THREADS to change it).
"""
import argparse
import dataclasses
import multiprocessing
import os
import sys
import tempfile
import time

import numpy as np

from fqsr_ref.data import photos_dir
from fqsr_ref.data.dataset import ProceduralSource
from fqsr_ref.data.images import write_image
from fqsr_ref.metrics import evaluate_folder
from fqsr_ref.models import init_model, preset, quantized_start, upscale
from fqsr_ref.trainer import StageOptions, train_stage

# Paper, x2, Set5 PSNR / SSIM: Table 2 (SRResNet, FQSR rows), Table 3 (EDSR, FQSR
# rows) and Table 5 (4/4/32, SRResNet; shown beside both architectures' ablations).
PAPER_BICUBIC_SET5 = (33.660, 0.930)
RUN_NAMES = [  # name, bits, DAIA warm-up, alpha
    ("FP", "32/32/32", 20, 0.3), ("8/8/32", "8/8/32", 20, 0.3), ("8/8/8", "8/8/8", 20, 0.3),
    ("6/6/8", "6/6/8", 20, 0.3), ("4/4/32", "4/4/32", 20, 0.3), ("4/4/8", "4/4/8", 20, 0.3),
    ("A1", "4/4/32", 0, 0.0),    # Table 5 row 1: no DAIA, no SQCL
    ("A2", "4/4/32", 20, 0.0),   # row 2: DAIA only
]
PAPER_SET5 = {
    "srresnet": [(37.760, 0.958), (37.881, 0.959), (37.555, 0.958), (37.541, 0.957),
                 (36.854, 0.953), (36.338, 0.945), (35.536, 0.944), (36.372, 0.945)],
    "edsr": [(37.885, 0.958), (37.993, 0.959), (37.955, 0.959), (37.817, 0.958),
             (37.087, 0.951), (37.038, 0.951), (35.536, 0.944), (36.372, 0.945)],
}
TABLE = {"srresnet": "Table 2", "edsr": "Table 3"}


def runs(arch):
    """(name, bits, warm-up, alpha, paper Set5 (PSNR, SSIM)) of one architecture."""
    return [(*r, paper) for r, paper in zip(RUN_NAMES, PAPER_SET5[arch])]
ABLATION_FULL = "4/4/32"   # row 3 (DAIA + SQCL) is the 4/4/32 run itself
# The orderings the paper's tables show, as (higher, lower) pairs of run names
# (Table 2/3: more bits are better and 4/4/8 beats bicubic; Table 5: each component helps).
ORDERINGS = [("8/8/32", "8/8/8"), ("8/8/8", "6/6/8"), ("6/6/8", "4/4/32"), ("4/4/32", "4/4/8"),
             ("4/4/8", "bicubic"), ("4/4/32", "A2"), ("A2", "A1")]


def train_all(args, arch):
    """The runs of one architecture, the train command's flow: FP on [0, 1] pixels,
    fine-tuning on 0..255."""
    cfg = preset(arch, 2, "32/32/32", blocks=2, channels=16, pixel_range=1.0)
    source = ProceduralSource()
    common = dict(batch=args.batch, patch=args.patch, seed=0, checkpoint_every=250)
    out = os.path.join(args.out, arch)
    fp = train_stage(cfg, *init_model(cfg, np.random.default_rng(0)), source,
                     StageOptions(steps=args.fp_steps, lr=args.lr, stage="fp", **common),
                     os.path.join(out, "FP.npz"), resume=True)
    models = {"FP": fp}
    for name, bits, warmup, alpha, _ in runs(arch)[1:]:
        qcfg = dataclasses.replace(cfg.with_bits(bits), pixel_range=255.0)
        params, state = quantized_start(cfg, fp.params, fp.state, qcfg)
        opts = StageOptions(steps=args.steps, lr=args.lr / 3, warmup=warmup, alpha=alpha,
                            stage="quant", **common)
        path = os.path.join(out, name.replace("/", "-") + ".npz")
        models[name] = train_stage(qcfg, params, state, source, opts, path, resume=True)
    return models


def never_learned(ckpt):
    """'k of n': parameters whose Adam second moment is still all zero (never a non-zero
    gradient in the run), of all."""
    dead = sum(not np.any(ckpt.adam["v/" + k]) for k in ckpt.params)
    return f"{dead} of {len(ckpt.params)}"


def evaluate(models):
    scores = {}
    for name, ckpt in models.items():
        _, mean = evaluate_folder(lambda lr: upscale(ckpt.config, ckpt.params, ckpt.state, lr),
                                  photos_dir(), 2)
        scores[name] = mean
        print(f"{name:8} PSNR {mean.psnr:.3f} SSIM {mean.ssim:.4f} "
              f"({mean.psnr - mean.bicubic_psnr:+.3f} dB over bicubic)", file=sys.stderr)
    return scores


READING = open(os.path.join(os.path.dirname(__file__), "reproduce_reading.md")).read()


def psnr_of(scores, name):
    return scores["FP"].bicubic_psnr if name == "bicubic" else scores[name].psnr


def write_markdown(path, all_scores, args, minutes):
    side_by_side = ", the architectures side by side" if min(args.jobs, len(args.arch)) > 1 else ""
    lines = [
        "# The paper's Tables 2, 3 and 5 at tiny scale",
        "",
        f"Made by `python tools/reproduce.py --fp-steps {args.fp_steps} --steps {args.steps} "
        f"--jobs {args.jobs}{' --docs ' + args.docs if args.docs else ''}` ({minutes:.0f} minutes "
        f"on a {os.cpu_count()}-core CPU{side_by_side}). Models: "
        "SRResNet and EDSR-baseline x2 with 16 channels and 2 blocks (the paper: 64 channels, "
        f"16 blocks), trained on procedural images only ({args.fp_steps} full-precision steps "
        f"on [0, 1] pixels, then {args.steps} quantized fine-tuning steps per row on 0..255 "
        f"pixels, batch {args.batch} of {args.patch}x{args.patch} LR patches, Adam at "
        f"{args.lr:g} then {args.lr / 3:g}); scored on the 8 bundled photographs (Y channel, "
        "border 2), which no model saw. The paper's figures are its Set5 x2 rows (Table 2 "
        "for SRResNet, Table 3 for EDSR; Table 5, an SRResNet ablation, beside both), "
        "trained 300 epochs on DIV2K. Compare gains over bicubic, not absolute PSNR: the "
        "test images differ.",
    ]
    for arch, (scores, dead) in all_scores.items():
        bic = scores["FP"]
        lines += [
            "", f"## {arch} ({TABLE[arch]})", "",
            "| run | DAIA | SQCL | never learned | PSNR | SSIM | gain over bicubic | "
            "paper Set5 PSNR | SSIM | paper gain |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            f"| bicubic | | | | {bic.bicubic_psnr:.3f} | {bic.bicubic_ssim:.4f} | 0 | "
            f"{PAPER_BICUBIC_SET5[0]:.3f} | {PAPER_BICUBIC_SET5[1]:.3f} | 0 |",
        ]
        for name, bits, warmup, alpha, paper in runs(arch):
            s = scores[name]
            label = name if name == bits or name == "FP" else f"{name} ({bits})"
            quant = name != "FP"
            lines.append(f"| {label} | {'yes' if quant and warmup else 'no' if quant else ''} | "
                         f"{'yes' if quant and alpha else 'no' if quant else ''} | "
                         f"{dead[name]} | {s.psnr:.3f} | "
                         f"{s.ssim:.4f} | {s.psnr - s.bicubic_psnr:+.3f} | {paper[0]:.3f} | "
                         f"{paper[1]:.3f} | {paper[0] - PAPER_BICUBIC_SET5[0]:+.3f} |")
        lines += ["", "A1 and A2 are Table 5's rows 1 and 2 (at 4/4/32); row 3 is the 4/4/32 run.",
                  "", "| the paper's claim | ours | holds |", "| --- | --- | --- |"]
        for hi, lo in ORDERINGS:
            d = psnr_of(scores, hi) - psnr_of(scores, lo)
            lines.append(f"| {hi} above {lo} | {d:+.3f} dB | {'yes' if d > 0 else 'no'} |")
        lines += ["", f"![gain over bicubic, {arch}](results_{arch}.png)"]
    lines += ["", READING]
    write_text(path, "\n".join(lines))


def write_text(path, text):
    """Atomically: a temporary file in the same folder, then os.replace."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


# A 3x5 pixel font for the plot's labels (no plotting library is a dependency).
GLYPHS = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111",
    "3": "111001111001111", "4": "101101111001001", "5": "111100110001110",
    "6": "111100111101111", "7": "111001001001001", "8": "111101111101111",
    "9": "111101111001111", "/": "001001010100100", ".": "000000000000010",
    "-": "000000111000000", "+": "000010111010000", " ": "000000000000000",
    "A": "010101111101101", "B": "110101110101110", "D": "110101101101110",
    "E": "111100110100111", "F": "111100110100100", "O": "111101101101111",
    "P": "111101111100100", "R": "110101110101101", "S": "111100111001111",
    "U": "101101101101111", "T": "111010010010010", "C": "111100100100111",
    "I": "111010010010111", "V": "101101101101010", "L": "100100100100111",
}


def draw_text(img, text, y, x, scale=3, color=(0, 0, 0)):
    for i, ch in enumerate(text):
        bits = np.array([int(b) for b in GLYPHS[ch]], bool).reshape(5, 3)
        block = np.kron(bits, np.ones((scale, scale), bool))
        x0 = x + i * 4 * scale
        region = img[y:y + 5 * scale, x0:x0 + 3 * scale]
        region[block[:region.shape[0], :region.shape[1]]] = color


def write_plot(path, scores, arch):
    """Bars of PSNR gain over bicubic: ours (blue) beside the paper's Set5 (grey)."""
    names = [r[0] for r in runs(arch)]
    ours = [scores[n].psnr - scores[n].bicubic_psnr for n in names]
    paper = [r[4][0] - PAPER_BICUBIC_SET5[0] for r in runs(arch)]
    values = ours + paper
    top, bottom = 40, 330                      # plot area rows
    unit = (bottom - top) / (max(max(values), 0) - min(min(values), 0))   # pixels per dB
    base = int(round(top + max(max(values), 0) * unit))
    h, w = bottom + 80, 80 + 90 * len(names)
    img = np.full((h, w, 3), 255, np.uint8)
    img[base, 40:w - 20] = 0
    for i, (name, a, b) in enumerate(zip(names, ours, paper)):
        x = 60 + 90 * i
        for dx, value, color in ((0, a, (40, 90, 200)), (32, b, (150, 150, 150))):
            end = int(round(base - value * unit))
            lo, hi = sorted((end, base))
            img[lo:hi + 1, x + dx:x + dx + 28] = color
            label_y = lo - 14 if value >= 0 else hi + 4
            draw_text(img, f"{value:+.1f}", label_y, x + dx - 2, scale=2)
        draw_text(img, name, bottom + 24, x, scale=3)
    draw_text(img, "OURS", h - 26, 60, color=(40, 90, 200))
    draw_text(img, "PAPER", h - 26, 160, color=(120, 120, 120))
    draw_text(img, "DB OVER BICUBIC", 4, w - 200, scale=2)
    write_image(path, img)


def train_and_score(args, arch):
    """(scores, parameters that never learned) of every run of one architecture."""
    models = train_all(args, arch)
    return evaluate(models), {name: never_learned(ckpt) for name, ckpt in models.items()}


class Parser(argparse.ArgumentParser):
    def error(self, message):
        # One line, no usage dump: the contract of every fqsr_ref command line.
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser():
    p = Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", nargs="+", choices=sorted(PAPER_SET5), default=["srresnet", "edsr"],
                   help="architectures (default: srresnet edsr)")
    p.add_argument("--fp-steps", type=int, default=6000, help="full-precision steps (default %(default)s)")
    p.add_argument("--steps", type=int, default=10000,
                   help="quantized fine-tuning steps per row (default %(default)s)")
    p.add_argument("--batch", type=int, default=8, help="batch size (default %(default)s)")
    p.add_argument("--patch", type=int, default=12, help="LR patch side (default %(default)s)")
    p.add_argument("--lr", type=float, default=3e-3,
                   help="full-precision learning rate; fine-tuning uses lr/3 (default %(default)g)")
    p.add_argument("--jobs", type=int, default=1,
                   help="architectures trained at once, one core each (default %(default)s)")
    p.add_argument("--out", default="runs/reproduce",
                   help="checkpoints (OUT/<arch>) and, without --docs, results.md and its plots "
                        "(default %(default)s)")
    p.add_argument("--docs", default=None,
                   help="write results.md and its plots to this folder instead of OUT "
                        "(default: OUT); `--docs docs` replaces the tracked docs/results.md")
    return p


def validate(args):
    """Refuse bad numbers and unusable folders before any training: ValueError naming the option."""
    for flag, value, low in (("--fp-steps", args.fp_steps, 0), ("--steps", args.steps, 1),
                             ("--batch", args.batch, 1), ("--patch", args.patch, 1),
                             ("--jobs", args.jobs, 1)):
        if value < low:
            raise ValueError(f"{flag} {value}: must be >= {low}")
    if not args.lr > 0:   # `not >` also refuses NaN
        raise ValueError(f"--lr {args.lr:g}: must be > 0")
    for flag, folder in (("--out", args.out), ("--docs", args.docs)):
        if folder is None:
            continue
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise ValueError(f"{flag} {folder}: exists and is not a folder")
        try:
            os.makedirs(folder, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as exc:
            raise ValueError(f"{flag} {folder}: cannot create or write to it "
                             f"({exc.strerror or exc})") from None


def main(argv=None):
    import signal

    args = build_parser().parse_args(argv)
    results_dir = args.docs or args.out
    t0 = time.time()
    # Exit contract of the fqsr_ref commands: bad input, a failing write or out of memory is
    # one line "error: ..." and exit 2; Ctrl-C is "interrupted" and exit 130; no traceback.
    # The workers ignore SIGINT, so Ctrl-C reaches only this process, which stops them.
    try:
        validate(args)
        with multiprocessing.Pool(min(args.jobs, len(args.arch)), initializer=signal.signal,
                                  initargs=(signal.SIGINT, signal.SIG_IGN)) as pool:
            results = pool.starmap(train_and_score, [(args, arch) for arch in args.arch])
        all_scores = dict(zip(args.arch, results))
        minutes = (time.time() - t0) / 60
        write_markdown(os.path.join(results_dir, "results.md"), all_scores, args, minutes)
        for arch, (scores, _) in all_scores.items():
            write_plot(os.path.join(results_dir, f"results_{arch}.png"), scores, arch)
    except KeyboardInterrupt:
        print("\ninterrupted; finished runs in --out are reused when started again", file=sys.stderr)
        raise SystemExit(130) from None
    except MemoryError:
        print("error: out of memory", file=sys.stderr)
        raise SystemExit(2) from None
    except (OSError, ValueError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"error: {msg}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"wrote {os.path.join(results_dir, 'results.md')} and its plots ({minutes:.0f} min)")


if __name__ == "__main__":
    main()
