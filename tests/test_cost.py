"""Cost model (fqsr_ref.cost) against Table 2 and the introduction's shares.

Each published figure gets two checks: our exact value, pinned, and its gap to
the paper's figure, with the tolerance docs/SPEC.md ("Cost model") justifies:
the paper truncates every layer's figure to 0.001 G (every feature map's to
0.001 MB) before summing them, so a sum of n terms, scaled by f (= M/64 for an
M-bit row) and rounded to 3 decimals, sits at most n * 0.001 * f + 0.0005 below
ours and at most 0.0005 above.

Table 2 costs every conv of a model at one M; ours does with requant_image=True.
By default the head of a low-bit model reads the image's 8-bit codes, so its M
is max(wt, 8): those rows are checked against the paper with requant_image=True
and against the per-conv rule by default.
"""
import subprocess
import sys
from fractions import Fraction
from math import floor

import pytest
from hypothesis import given, settings, strategies as st

from fqsr_ref.cost import (PAPER_SHARES_ER, PAPER_TABLE2, default_lr_size, main, model_cost,
                           paper_figures, parse_bits, parse_size)

P2 = 1020 * 678  # LR pixels of the DIV2K image at x2
P4 = 510 * 339   # ... and at x4

# Our multiplications per LR pixel, derived by hand (docs/SPEC.md, "Cost model").
SRRESNET_X2 = 15552 + 16 * 73728 + 36864 + 147456 + 62208       # 1_441_728
SRRESNET_X4 = 15552 + 16 * 73728 + 36864 + 5 * 147456 + 248832  # 2_218_176
WO_M_X2 = 15552 + 147456 + 62208
WO_M_X4 = 15552 + 5 * 147456 + 248832
LITE_X2 = SRRESNET_X2 - 6 * 73728
LITE_X4 = SRRESNET_X4 - 6 * 73728

PINNED_MACS = {
    ("srresnet", 2): SRRESNET_X2 * P2, ("srresnet", 4): SRRESNET_X4 * P4,
    ("srresnet_wo_m", 2): WO_M_X2 * P2, ("srresnet_wo_m", 4): WO_M_X4 * P4,
    ("fqsr_lite", 2): LITE_X2 * P2, ("fqsr_lite", 4): LITE_X4 * P4,
}


def m_factor(bits):
    """The factor Table 2 applies to a model's multiplications: M/64 or 1."""
    wt, fm, _ = parse_bits(bits)
    return Fraction(max(wt, fm), 64) if max(wt, fm) < 32 else Fraction(1)


def head_macs(report):
    head = report.layers[0]
    assert (head.name, head.module) == ("head", "E")
    return head.macs


def expected_ops(report, requant_image=False):
    """OPs by the per-conv rule: M = max(wt, fm), the head's max(wt, 8) in a
    low-bit model unless requant_image; MACs for full-precision convs."""
    wt, fm, _ = report.bits
    if not (wt < 32 and fm < 32):
        return Fraction(report.macs)
    head = head_macs(report)
    head_reads = fm if requant_image else 8
    return Fraction((report.macs - head) * max(wt, fm) + head * max(wt, head_reads), 64)


def assert_within_truncation(ours, paper, n_terms, factor=1, what=""):
    """Paper = round3(factor * sum of n terms each truncated to 3 decimals)."""
    gap = ours - paper
    hi = n_terms * 0.001 * float(factor) + 0.0005
    assert -0.0005 <= gap <= hi, f"{what}: ours {ours:.6f}, paper {paper}, gap {gap:+.6f} not in [-0.0005, {hi:.6f}]"


def trunc3(x: Fraction) -> Fraction:
    return Fraction(floor(x * 1000), 1000)


def round3(x: Fraction) -> Fraction:
    return Fraction(floor(x * 1000 + Fraction(1, 2)), 1000)


def n_convs(report):
    return sum(1 for r in report.layers if r.kind == "conv")


# --- Table 2: SRResNet, SRResNet w/o M, FQSR rows ----------------------------

REPRODUCED = [k for k in PAPER_TABLE2 if k[0] != "fqsr_lite"]


@pytest.mark.parametrize("arch,scale,bits", REPRODUCED)
def test_table2_ops_pinned_and_within_truncation(arch, scale, bits):
    # The paper's uniform M: the head reads the image requantized to fm bits.
    r = model_cost(arch, scale, bits, requant_image=True)
    factor = m_factor(bits)
    assert r.macs == PINNED_MACS[(arch, scale)]
    assert r.ops == r.macs * factor  # every conv at the same M, or all FP
    ops_paper, _ = PAPER_TABLE2[(arch, scale, bits)]
    assert_within_truncation(r.ops_g, ops_paper, n_convs(r), factor, f"OPs {arch} x{scale} {bits}")
    assert 0 < r.ops_g / ops_paper - 1 < 4e-5
    # Default: the head reads the 8-bit image codes, M = max(wt, 8) for it.
    d = model_cost(arch, scale, bits)
    assert d.macs == r.macs
    assert d.ops == expected_ops(d)
    wt, fm, _ = d.bits
    head_extra = Fraction(head_macs(d) * (max(wt, 8) - max(wt, fm)), 64) if fm < 32 else 0
    assert d.ops == r.ops + head_extra


# Before the head read the 8-bit image codes: OPs and bops of every quantized
# row of Table 2, as integers (OPs are whole numbers here).
OLD_FIGURES = {
    (2, "4/4/8"): (62315088480, 15952662650880), (2, "4/4/32"): (62315088480, 15952662650880),
    (2, "6/6/8"): (93472632720, 35893490964480), (2, "8/8/8"): (124630176960, 63810650603520),
    (2, "8/8/32"): (124630176960, 63810650603520),
    (4, "4/4/8"): (23968778040, 6136007178240), (4, "4/4/32"): (23968778040, 6136007178240),
    (4, "6/6/8"): (35953167060, 13806016151040), (4, "8/8/8"): (47937556080, 24544028712960),
    (4, "8/8/32"): (47937556080, 24544028712960),
}


@pytest.mark.parametrize("scale,bits", list(OLD_FIGURES))
def test_requant_image_reproduces_the_uniform_m_figures_exactly(scale, bits):
    r = model_cost("srresnet", scale, bits, requant_image=True)
    assert (r.ops, r.bops) == OLD_FIGURES[(scale, bits)]
    assert all(l.bits == max(r.bits[:2]) for l in r.layers if l.kind == "conv")


def test_head_bits_are_max_wt_8_by_default_and_fm_with_requant_image():
    d = model_cost("srresnet", 2, "4/4/8")
    q = model_cost("srresnet", 2, "4/4/8", requant_image=True)
    assert (d.layers[0].name, d.layers[0].bits, d.layers[0].read_bits) == ("head", max(4, 8), 8)
    assert (q.layers[0].name, q.layers[0].bits, q.layers[0].read_bits) == ("head", 4, 4)
    assert (d.requant_image, q.requant_image) == (False, True)
    # Every other conv reads fm bits either way.
    for a, b in zip(d.layers[1:], q.layers[1:]):
        assert a == b
        assert (a.bits, a.read_bits) == ((4, 4) if a.kind == "conv" else (0, 0))
    # wt > 8: the head's M is wt, it still reads 8 bits.
    w = model_cost("srresnet", 2, "16/4/8").layers[0]
    assert (w.bits, w.read_bits) == (16, 8)
    # Full precision: nothing changes.
    fp, fpq = model_cost("srresnet", 2), model_cost("srresnet", 2, requant_image=True)
    assert (fp.layers[0].bits, fp.ops, fp.bops) == (32, fpq.ops, fpq.bops) == (32, fp.macs, 0)


def test_bops_srresnet_x2_448_head_is_8_by_4_bits():
    r = model_cost("srresnet", 2, "4/4/8")
    convs = [l for l in r.layers if l.kind == "conv"]
    head, rest = convs[0], convs[1:]
    assert head.name == "head" and head.macs == 15552 * P2
    assert r.bops == sum(l.macs for l in rest) * 4 * 4 + head.macs * 4 * 8
    assert r.bops == (SRRESNET_X2 - 15552) * P2 * 16 + 15552 * P2 * 32 == 16124744908800
    assert r.ops == 62987284800  # 62315088480 + head MACs * 4/64
    e = model_cost("srresnet", 2, "8/8/8")
    assert (e.ops, e.bops) == OLD_FIGURES[(2, "8/8/8")]  # the head was 8 x 8 already


@pytest.mark.parametrize("arch,scale,bits", list(PAPER_TABLE2))
def test_table2_memory_pinned_and_within_truncation(arch, scale, bits):
    r = model_cost(arch, scale, bits)
    w, h = default_lr_size(scale)
    maps, map_bits = (1, 32) if arch == "srresnet_wo_m" else (3, parse_bits(bits)[2])
    assert r.peak_memory_bits == maps * 64 * w * h * map_bits
    _, memo_paper = PAPER_TABLE2[(arch, scale, bits)]
    assert_within_truncation(r.peak_memory_mb, memo_paper, maps, 1, f"Memo {arch} x{scale} {bits}")
    assert abs(r.peak_memory_mb / memo_paper - 1) < 3e-5


def test_truncated_layer_sums_give_the_published_digits():
    # The explanation of the gaps, checked: summing each conv's GMACs truncated
    # to 3 decimals, then applying M/64 and rounding, gives the published OPs
    # of every SRResNet and w/o M row but one (x4 FP: 383.484, published 383.487).
    mismatches = []
    for arch, scale, bits in REPRODUCED:
        r = model_cost(arch, scale, bits)
        summed = sum(trunc3(Fraction(l.macs, 10**9)) for l in r.layers if l.kind == "conv")
        emulated = round3(summed * m_factor(bits))
        if emulated != Fraction(str(PAPER_TABLE2[(arch, scale, bits)][0])):
            mismatches.append((arch, scale, bits, float(emulated)))
    assert mismatches == [("srresnet", 4, "32/32/32", 383.484)]


def test_fp_memory_is_three_truncated_maps():
    # 531.117 and 132.777 are 3 x one map truncated to 0.001 MB.
    for scale, published in ((2, "531.117"), (4, "132.777")):
        w, h = default_lr_size(scale)
        one_map_mb = Fraction(64 * w * h * 4, 10**6)
        assert 3 * trunc3(one_map_mb) == Fraction(published)


@pytest.mark.parametrize("scale,ours_per_pixel,pixels,rel_gap", [
    (2, LITE_X2, P2, 0.01406), (4, LITE_X4, P4, 0.00788)])
def test_fqsr_lite_gap_is_the_mapping_module_scaled_by_10_16(scale, ours_per_pixel, pixels, rel_gap):
    # Ours: 10 blocks + the trunk conv = 21 convs in M. The paper's figure is
    # E + R + 10/16 of the 16-block M (33 * 10/16 = 20.625 convs).
    # The paper's uniform M (requant_image); by default the head adds its MACs * 2/64.
    lite = model_cost("fqsr_lite", scale, "6/6/8", requant_image=True)
    assert lite.macs == ours_per_pixel * pixels
    ops_paper, _ = PAPER_TABLE2[("fqsr_lite", scale, "6/6/8")]
    assert lite.ops_g / ops_paper - 1 == pytest.approx(rel_gap, abs=5e-5)
    default = model_cost("fqsr_lite", scale, "6/6/8")
    assert default.ops == lite.ops + Fraction(15552 * pixels * (8 - 6), 64) == expected_ops(default)
    full = model_cost("srresnet", scale, "6/6/8", requant_image=True)
    m16 = full.macs_by_module["M"]
    scaled = (full.macs_by_module["E"] + full.macs_by_module["R"] + Fraction(10, 16) * m16) * Fraction(6, 64)
    assert_within_truncation(float(scaled) / 1e9, ops_paper, n_convs(full), Fraction(6, 64), "Lite as 10/16 M")


def test_other_rows_of_table2_follow_the_same_rules():
    # SRResNet_Bin (binary weights, FP activations): FP costs.
    binw = model_cost("srresnet", 2, "1/32/32")
    assert (binw.ops, binw.peak_memory_bits) == (binw.macs, 3 * 64 * P2 * 32)
    # SRResNet_BAM: binary M (BOPs/64 with M = 1), FP E and R: 168.894 / 176.461.
    for scale, published in ((2, 168.894), (4, 176.461)):
        r = model_cost("srresnet", scale)
        by = r.macs_by_module
        ops = (by["E"] + by["R"] + Fraction(by["M"], 64)) / 10**9
        assert_within_truncation(float(ops), published, n_convs(r), 1, f"BAM x{scale}")


# --- Introduction: E + R share of the multiplications ------------------------

def test_intro_shares_pinned():
    expected = {("srresnet", 2): Fraction(WO_M_X2, SRRESNET_X2),
                ("srresnet", 4): Fraction(WO_M_X4, SRRESNET_X4),
                ("edsr", 2): Fraction(1728 + 147456 + 4 * 1728, 1728 + 16 * 73728 + 36864 + 147456 + 4 * 1728),
                ("edsr", 4): Fraction(1728 + 5 * 147456 + 16 * 1728,
                                      1728 + 16 * 73728 + 36864 + 5 * 147456 + 16 * 1728)}
    for (arch, scale), share in expected.items():
        r = model_cost(arch, scale)
        assert Fraction(r.macs_by_module["E"] + r.macs_by_module["R"], r.macs) == share
        assert r.share_er == pytest.approx(float(share), rel=1e-15)
        assert sum(r.shares.values()) == pytest.approx(1.0, rel=1e-15)


@pytest.mark.parametrize("key", [("srresnet", 2), ("edsr", 2), ("edsr", 4)])
def test_intro_shares_round_to_the_published_value(key):
    r = model_cost(*key)
    assert round(100 * r.share_er, 1) == PAPER_SHARES_ER[key]


def test_intro_share_srresnet_x4_is_truncated_in_the_paper():
    # 45.157 %: the paper prints 45.1 (truncated; its own Table 2 gives
    # 173.175 / 383.487 = 45.158 %), 0.057 points below ours.
    r = model_cost("srresnet", 4)
    assert floor(1000 * r.share_er) / 10 == PAPER_SHARES_ER[("srresnet", 4)]
    assert 100 * r.share_er - 45.1 == pytest.approx(0.0571, abs=1e-4)
    assert 100 * 173.175 / 383.487 == pytest.approx(45.158, abs=1e-3)


# --- Properties ---------------------------------------------------------------

def closed_form_macs_per_pixel(arch, scale, blocks, c):
    """Multiplications per LR pixel, written from the architecture tables."""
    k = 3 if arch == "edsr" else 9
    up = {2: 9 * c * 4 * c, 3: 9 * c * 9 * c, 4: 9 * c * 4 * c * (1 + 4)}[scale]
    e_and_r = k * k * 3 * c + up + k * k * c * 3 * scale * scale
    if arch == "srresnet_wo_m":
        return e_and_r
    return e_and_r + blocks * 2 * 9 * c * c + 9 * c * c


@settings(max_examples=40)
@given(arch=st.sampled_from(["srresnet", "srgan", "edsr", "fqsr_lite", "srresnet_wo_m"]),
       scale=st.sampled_from([2, 3, 4]), blocks=st.integers(0, 20), c=st.integers(1, 96),
       w=st.integers(1, 300), h=st.integers(1, 300),
       wt=st.sampled_from([1, 2, 4, 6, 8, 16, 32]), fm=st.sampled_from([2, 4, 8, 32]),
       sc=st.sampled_from([4, 8, 32]), requant=st.booleans())
def test_graph_walk_matches_closed_form(arch, scale, blocks, c, w, h, wt, fm, sc, requant):
    blocks = 0 if arch == "srresnet_wo_m" else blocks
    r = model_cost(arch, scale, (wt, fm, sc), (w, h), blocks, c, requant_image=requant)
    assert r.macs == closed_form_macs_per_pixel(arch, scale, blocks, c) * w * h
    assert sum(r.macs_by_module.values()) == r.macs
    low_bit = wt < 32 and fm < 32
    head = (3 if arch == "edsr" else 9) ** 2 * 3 * c * w * h
    assert r.macs_by_module["E"] == head_macs(r) == head
    head_reads = fm if requant else 8
    assert r.ops == (Fraction((r.macs - head) * max(wt, fm) + head * max(wt, head_reads), 64)
                     if low_bit else r.macs)
    assert r.ops == expected_ops(r, requant)
    assert (r.flops, r.bops) == ((0, (r.macs - head) * wt * fm + head * wt * head_reads)
                                 if low_bit else (r.macs, 0))
    # The paper's peak counts maps of C x H_lr x W_lr.
    if arch == "srresnet_wo_m":
        assert r.peak_memory_bits == fm * c * w * h
    else:
        assert r.peak_memory_bits == (3 if blocks else 2) * sc * c * w * h
    # While a conv runs, at least its input and its output are alive.
    narrowest = min(fm, sc, 8)
    for row in r.layers:
        if row.kind == "conv":
            elements = (row.c_in + row.c_out) * row.out_h * row.out_w
            assert row.live_bits >= narrowest * elements, row
    assert r.live_peak_bits == max(row.live_bits for row in r.layers)


def test_live_peak_of_fp_srresnet_x2_is_the_upsampler():
    # While the x2 upsampler conv runs: its input (64 x LR) and its output
    # (256 x LR) are alive, 5 maps, against the paper's 3.
    r = model_cost("srresnet", 2)
    assert r.live_peak_bits == 5 * 64 * P2 * 32
    peak_row = max(r.layers, key=lambda l: l.live_bits)
    assert peak_row.name == "up.0"
    # Inside M, from the second block on: long skip, short skip, conv1 and conv2
    # outputs = 4 maps.
    conv2 = next(l for l in r.layers if l.name == "blocks.1.conv2")
    assert conv2.live_bits == 4 * 64 * P2 * 32
    # The head reads the image: float32 in the FP model, 8-bit codes once quantized.
    assert r.layers[0].live_bits == (3 + 64) * P2 * 32
    q = model_cost("srresnet", 2, "4/4/8")
    assert q.layers[0].live_bits == 3 * P2 * 8 + 64 * P2 * 8


def test_paper_figures_only_for_the_papers_configuration():
    assert paper_figures(model_cost("srresnet", 2, "8/8/8")) == (124.627, 132.779)
    assert paper_figures(model_cost("srresnet", 2, "8/8/8", (1024, 678))) is None
    assert paper_figures(model_cost("srresnet", 2, "8/8/8", blocks=15)) is None
    assert paper_figures(model_cost("edsr", 2, "8/8/8")) is None


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(arch="vdsr", scale=2), "unknown arch"),
    (dict(arch="srresnet", scale=8), "scale 8"),
    (dict(arch="srresnet", scale=2, bits="8/8"), "wt/fm/sc"),
    (dict(arch="srresnet", scale=2, bits="8/0/8"), "fm = 0"),
    (dict(arch="srresnet", scale=2, bits="8/8/24"), "sc = 24"),
    (dict(arch="srresnet", scale=2, lr_size="0x5"), "'0x5'"),
    (dict(arch="srresnet", scale=2, blocks=-1), "blocks = -1"),
    (dict(arch="srresnet", scale=2, channels=0), "channels = 0"),
    (dict(arch="srresnet_wo_m", scale=2, blocks=4), "no residual blocks"),
])
def test_bad_arguments_raise_value_error(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        model_cost(**kwargs)


def test_parse_helpers():
    assert parse_bits("4/4/8") == (4, 4, 8)
    assert parse_size("1020X678") == (1020, 678)
    assert default_lr_size(3) == (680, 452)


# --- Command line -------------------------------------------------------------

def test_cli_prints_ops_memory_and_shares(capsys):
    assert main(["--arch", "srresnet", "--scale", "2", "--bits", "8/8/8",
                 "--lr-size", "1020x678"]) == 0
    out = capsys.readouterr().out
    assert "OPs (BOPs/64*M + FLOPs)       124.630 G" in out
    assert "peak memory (paper)           132.780 MB" in out
    assert "E + R share of FLOPs" in out and "15.62 %" in out
    assert "paper, Table 2: OPs 124.627 G" in out


def test_cli_requant_image(capsys):
    argv = ["--arch", "srresnet", "--scale", "2", "--bits", "4/4/8"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "OPs (BOPs/64*M + FLOPs)        62.987 G" in out
    assert "BOPs (MACs*wt*in bits)      16124.745 G" in out
    assert "image requantized" not in out
    assert "paper, Table 2: OPs 62.314 G (+1.0805 %)" in out
    assert "the paper's uniform M: --requant-image" in out
    assert main([*argv, "--requant-image"]) == 0
    out = capsys.readouterr().out
    assert "OPs (BOPs/64*M + FLOPs)        62.315 G" in out
    assert "BOPs (MACs*wt*in bits)      15952.663 G" in out
    assert "image requantized to fm bits" in out
    assert "paper, Table 2: OPs 62.314 G (+0.0017 %)" in out
    assert "uniform M" not in out
    proc = subprocess.run([sys.executable, "-m", "fqsr_ref.cost", "--help"],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "--requant-image" in proc.stdout


def test_cli_layers_table(capsys):
    assert main(["--arch", "edsr", "--scale", "3", "--blocks", "2", "--channels", "8",
                 "--lr-size", "10x7", "--layers"]) == 0
    out = capsys.readouterr().out
    assert "blocks.1.add" in out and "up.0" in out and "paper, Table 2" not in out


@pytest.mark.parametrize("argv", [
    ["--arch", "vdsr"], ["--scale", "5"], ["--bits", "8/8"], ["--lr-size", "1020"],
    ["--blocks", "x"], ["--channels", "-3"], ["--arch", "srresnet_wo_m", "--blocks", "2"],
])
def test_cli_bad_arguments_exit_2_with_one_line(argv):
    proc = subprocess.run([sys.executable, "-m", "fqsr_ref.cost", *argv],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
