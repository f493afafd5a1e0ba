"""Tiled integer inference is byte-identical to whole-image inference (SPEC 6.9)."""
import numpy as np
import pytest

from fqsr_ref.checkpoint import Checkpoint, save_checkpoint
from fqsr_ref.data.images import read_image, write_image
from fqsr_ref.infer import main as infer_main, parse_bytes
from fqsr_ref.integer.model import convert
from fqsr_ref.integer.run import run_image as run_whole, run_ops
from fqsr_ref.integer.tiling import (MIN_TILE, choose_tile, estimate_bytes, receptive_radius, run_image,
                                     run_tiled)
from test_integer_model import calibrated


@pytest.fixture(scope="module")
def models():
    out = {}
    for arch, scale, bits in (("srresnet", 2, "8/8/8"), ("edsr", 3, "4/4/8"), ("srresnet", 4, "6/6/8")):
        cfg, params, state = calibrated(arch, scale, bits)
        out[arch, scale] = convert(cfg, params, state)
    return out


def test_receptive_radius_from_the_graph(models):
    # SRResNet x2, 2 blocks: head 9x9 (4) + 2 blocks x 2 convs (4) + trunk (1) + up conv at LR (1)
    # + tail 9x9 at HR (4 HR pixels = 2 LR pixels) = 12.
    assert receptive_radius(models["srresnet", 2]) == 12
    # x4: two up convs, at LR (1) and at 2x (1/2), tail at 4x (4/4): 4 + 4 + 1 + 1 + 1/2 + 1 -> 12.
    assert receptive_radius(models["srresnet", 4]) == 12
    # EDSR x3: head 3x3, 2 blocks, trunk, up conv at LR, tail 3x3 at 3x: 1 + 4 + 1 + 1 + 1/3 -> 8.
    assert receptive_radius(models["edsr", 3]) == 8


CASES = [(23, 37, 10), (1, 1, 1), (30, 1, 7), (2, 29, 4), (13, 13, 13)]


@pytest.mark.parametrize("key,h,w,tile", [(("srresnet", 2),) + c for c in CASES]
                         + [(("edsr", 3), 17, 5, 4), (("srresnet", 4), 11, 26, 9), (("srresnet", 4), 1, 3, 2)])
def test_tiled_equals_whole(models, key, h, w, tile):
    model = models[key]
    rng = np.random.default_rng(h * 100 + w)
    lr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    whole = run_whole(model, lr)
    tiled = run_tiled(model, lr, tile)
    s = model.config.scale
    assert whole.shape == tiled.shape == (s * h, s * w, 3) and whole.dtype == tiled.dtype == np.uint8
    assert np.array_equal(whole, tiled)
    # the channels-last runner gives the same codes as the NCHW one the vectors record
    nchw = run_ops(model, lr.transpose(2, 0, 1)[None].copy())["image.out"][0].transpose(1, 2, 0)
    assert np.array_equal(whole, nchw)


def test_bitplane_engine_tiled(models):
    model = models["srresnet", 2]
    lr = np.random.default_rng(9).integers(0, 256, (9, 14, 3), dtype=np.uint8)
    assert np.array_equal(run_tiled(model, lr, 5, "bitplane"), run_whole(model, lr))


def test_budget_picks_a_tile(models):
    model = models["srresnet", 2]
    assert choose_tile(model, 100, 100, 1 << 40) is None
    small = estimate_bytes(model, 64 + 24, 64 + 24) + 3 * 300 * 300 * 5
    tile = choose_tile(model, 300, 300, small)
    assert tile is not None and MIN_TILE <= tile < 300
    with pytest.raises(ValueError, match="MiB"):
        choose_tile(model, 300, 300, 1000)
    lr = np.random.default_rng(2).integers(0, 256, (70, 61, 3), dtype=np.uint8)
    budget = estimate_bytes(model, MIN_TILE + 24, MIN_TILE + 24) + 3 * 70 * 61 * 5
    sr, used = run_image(model, lr, budget=budget)
    assert used is not None and used < 70 and np.array_equal(sr, run_whole(model, lr))


def test_estimate_grows_with_pixels_and_engine(models):
    model = models["srresnet", 2]
    a, b = estimate_bytes(model, 100, 100), estimate_bytes(model, 200, 200)
    assert b > a
    assert estimate_bytes(model, 200, 200, "bitplane") > b


def test_infer_tile_option_gives_the_same_bytes(tmp_path, capsys):
    cfg, params, state = calibrated("srresnet", 2, "8/8/8")
    save_checkpoint(str(tmp_path / "q.npz"), Checkpoint(cfg, params, state, {}, {}))
    write_image(str(tmp_path / "in.png"), np.random.default_rng(4).integers(0, 256, (19, 26, 3), dtype=np.uint8))
    base = ["--checkpoint", str(tmp_path / "q.npz"), "--image", str(tmp_path / "in.png")]
    assert infer_main(base + ["--out", str(tmp_path / "whole.png")]) == 0
    assert infer_main(base + ["--out", str(tmp_path / "tiled.png"), "--tile", "6"]) == 0
    assert "tiles of 6" in capsys.readouterr().out
    assert np.array_equal(read_image(str(tmp_path / "whole.png")), read_image(str(tmp_path / "tiled.png")))
    for bad in (["--tile", "0"], ["--memory-budget", "lots"], ["--memory-budget=-1G"]):
        assert infer_main(base + ["--out", str(tmp_path / "x.png")] + bad) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and bad[0].split("=")[0] in err[0]
    assert infer_main(base + ["--out", str(tmp_path / "x.png"), "--memory-budget", "1K"]) == 2
    assert "memory budget" in capsys.readouterr().err


def test_parse_bytes():
    assert parse_bytes("1G") == 1 << 30 and parse_bytes("512M") == 512 << 20
    assert parse_bytes("1.5GiB") == 3 << 29 and parse_bytes("1000") == 1000 and parse_bytes("2kb") == 2048
    for bad in ("", "G", "0", "-5M", "inf", "nanG", "1X"):
        with pytest.raises(ValueError, match="--memory-budget"):
            parse_bytes(bad)


# --- evaluate: the float forward in tiles when an image would exceed the budget ------------------------

def test_float_radius_matches_the_integer_graph(models):
    from fqsr_ref.evaluate import config_radius
    for model in models.values():
        assert config_radius(model.config) == receptive_radius(model)


def test_evaluate_tiles_a_large_forward_and_refuses_what_cannot_fit(tmp_path, capsys):
    from fqsr_ref import evaluate
    cfg, params, state = calibrated("srresnet", 2, "8/8/8")
    save_checkpoint(str(tmp_path / "q.npz"), Checkpoint(cfg, params, state, {}, {}))
    hr = tmp_path / "hr"
    hr.mkdir()
    write_image(str(hr / "a.png"), np.random.default_rng(5).integers(0, 256, (128, 120, 3), dtype=np.uint8))
    base = ["--checkpoint", str(tmp_path / "q.npz"), "--hr-dir", str(hr), "--scale", "2"]
    assert evaluate.main(base) == 0
    whole = capsys.readouterr().out
    from fqsr_ref.checkpoint import load_upscaler
    per_px = evaluate.forward_bytes_per_pixel(load_upscaler(str(tmp_path / "q.npz")))
    halo = evaluate.config_radius(cfg)
    budget = evaluate.SCORE_BYTES_PER_HR_PIXEL * 128 * 120 + per_px * (evaluate.MIN_TILE + 2 * halo + 4) ** 2
    assert evaluate.main(base + ["--memory-budget", str(budget)]) == 0
    tiled = capsys.readouterr().out
    assert "ran in tiles" in tiled and "ran in tiles" not in whole
    psnr = [float(next(ln for ln in out.splitlines() if ln.startswith("a.png")).split()[1]) for out in (whole, tiled)]
    assert abs(psnr[0] - psnr[1]) <= 0.02
    assert evaluate.main(base + ["--memory-budget", "100K"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "needs about" in err[0] and "a.png" in err[0]


@pytest.mark.parametrize("arch,scale,bits", [("srresnet", 2, "8/8/8"), ("edsr", 3, "32/32/32")])
def test_evaluate_measures_the_forward_it_budgets(arch, scale, bits):
    """The per-pixel estimate evaluate tiles by bounds the peak of a larger forward and
    is not far above it (the old analytic estimate was 7-15x the peak)."""
    import tracemalloc

    from fqsr_ref import evaluate
    from fqsr_ref.models import upscale
    cfg, params, state = calibrated(arch, scale, bits)
    sr_fn = lambda lr: upscale(cfg, params, state, lr)   # noqa: E731
    per_px = evaluate.forward_bytes_per_pixel(sr_fn)
    lr = np.random.default_rng(3).integers(0, 256, (80, 72, 3), dtype=np.uint8)
    tracemalloc.start()
    sr_fn(lr)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak <= per_px * 80 * 72 <= 3 * peak


def test_a_huge_image_gets_tiles_within_the_budget(models):
    # issue 12: infer on 2000x2000 / 4000x4000 asked for 29 / 14.5 GiB; now it picks tiles that fit
    # (this 8-channel model needs a smaller budget than the full one to be tiled)
    model = models["srresnet", 2]
    halo = receptive_radius(model)
    for side, budget in ((2000, 1 << 28), (4000, 1 << 29)):
        assert estimate_bytes(model, side, side) > budget
        tile = choose_tile(model, side, side, budget)
        assert tile is not None and MIN_TILE <= tile < side
        assert estimate_bytes(model, tile + 2 * halo, tile + 2 * halo) + 15 * side * side <= budget
