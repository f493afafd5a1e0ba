"""A checkpoint cannot lie: its config and its arrays must agree (issue 12), and
every command that loads one turns a disagreement into one line, exit 2."""
import numpy as np
import pytest

from fqsr_ref.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from fqsr_ref.data import photos_dir
from fqsr_ref.data.images import list_images, read_image, write_image
from fqsr_ref.evaluate import main as evaluate_main
from fqsr_ref.infer import main as infer_main
from fqsr_ref.models import init_model, preset
from fqsr_ref.models.discriminator import disc_init
from fqsr_ref.optim import adam_init
from fqsr_ref.train import main as train_main
from fqsr_ref.vectors.cli import main as vectors_main

CFG = preset("srresnet", 2, "32/32/32", blocks=1, channels=4).with_bits("8/8/8")


def model(cfg=CFG):
    return init_model(cfg, np.random.default_rng(0))


def write(path, cfg=CFG, params=None, state=None, adam=None):
    p, s = model(cfg)
    params = p if params is None else params
    save_checkpoint(str(path), Checkpoint(cfg, params, s if state is None else state,
                                          {} if adam is None else adam, {}))
    return str(path)


def one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def test_a_consistent_checkpoint_loads(tmp_path):
    params, state = model()
    path = write(tmp_path / "ok.npz", adam=adam_init(params))
    ckpt = load_checkpoint(path)
    assert sorted(ckpt.params) == sorted(params) and sorted(ckpt.state) == sorted(state)
    # float32 arrays (what training writes) are as good as float64
    f32 = {k: np.asarray(v, np.float32) for k, v in params.items()}
    load_checkpoint(write(tmp_path / "f32.npz", params=f32))


def test_ctrl_c_while_saving_finishes_the_checkpoint_first(tmp_path, monkeypatch):
    """Ctrl-C inside np.savez used to leave zipfile's write handle open; closing the
    archive then raised "Can't close the ZIP file while there is an open writing handle"
    (a ValueError: exit 2 and a traceback where the trainer promises one line, exit 130).
    Now the interrupt waits for the checkpoint to be in place."""
    import os
    import signal

    import fqsr_ref.checkpoint as checkpoint
    real_savez = np.savez

    def interrupted_savez(f, **arrays):
        first = dict(list(arrays.items())[:2])
        real_savez(f, **first)            # some members written ...
        f.seek(0)
        os.kill(os.getpid(), signal.SIGINT)   # ... Ctrl-C arrives ...
        real_savez(f, **arrays)           # ... and the write goes on to the end
    monkeypatch.setattr(checkpoint.np, "savez", interrupted_savez)
    params, state = model()
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(str(tmp_path / "c.npz"), Checkpoint(CFG, params, state, {}, {}))
    monkeypatch.undo()
    assert sorted(load_checkpoint(str(tmp_path / "c.npz")).params) == sorted(params)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert os.listdir(tmp_path) == ["c.npz"]


def test_missing_parameter(tmp_path):
    params, _ = model()
    del params["head.w"]
    path = write(tmp_path / "c.npz", params=params)
    with pytest.raises(ValueError, match=r"c\.npz: missing parameter param/head\.w"):
        load_checkpoint(path)


def test_missing_state_entry(tmp_path):
    _, state = model()
    del state["trunk.bn_var"]
    with pytest.raises(ValueError, match=r"missing state entry state/trunk\.bn_var"):
        load_checkpoint(write(tmp_path / "c.npz", state=state))


def test_unexpected_parameter(tmp_path):
    params, _ = model()
    params["blocks.1.conv1.w"] = params["blocks.0.conv1.w"]
    with pytest.raises(ValueError, match=r"unexpected parameter param/blocks\.1\.conv1\.w"):
        load_checkpoint(write(tmp_path / "c.npz", params=params))


def test_weights_of_another_size(tmp_path):
    """The issue's case: a config saying 4 channels over 16-channel weights."""
    big, _ = model(preset("srresnet", 2, "32/32/32", blocks=1, channels=16).with_bits("8/8/8"))
    with pytest.raises(ValueError, match=r"param/head\.w has shape \(16, 3, 9, 9\) but .* needs \(4, 3, 9, 9\)"):
        load_checkpoint(write(tmp_path / "c.npz", params=big))


def test_wrong_dtype(tmp_path):
    params, _ = model()
    params["head.b"] = params["head.b"].astype(np.int64)
    with pytest.raises(ValueError, match=r"param/head\.b has dtype int64, expected a float array"):
        load_checkpoint(write(tmp_path / "c.npz", params=params))


def test_adam_state_must_match_the_parameters(tmp_path):
    params, _ = model()
    adam = adam_init(params)
    adam["m/head.w"] = np.zeros(3)
    with pytest.raises(ValueError, match=r"adam/m/head\.w has shape"):
        load_checkpoint(write(tmp_path / "c.npz", adam=adam))


def test_srgan_discriminator_entries_are_checked(tmp_path):
    cfg = preset("srgan", 2, "32/32/32", blocks=1, channels=4)
    params, state = model(cfg)
    d_params, d_state = disc_init(np.random.default_rng(1), 4, 2)
    load_checkpoint(write(tmp_path / "ok.npz", cfg, {**params, **d_params}, {**state, **d_state}))
    del d_state["disc.conv1.bn_mean"]
    with pytest.raises(ValueError, match=r"missing state entry state/disc\.conv1\.bn_mean"):
        load_checkpoint(write(tmp_path / "c.npz", cfg, {**params, **d_params}, {**state, **d_state}))
    d_params, _ = disc_init(np.random.default_rng(1), 4, 2)
    with pytest.raises(ValueError, match=r"unexpected parameter param/disc\."):
        load_checkpoint(write(tmp_path / "d.npz", params={**model()[0], **d_params}))


@pytest.fixture
def broken(tmp_path):
    params, _ = model()
    del params["head.w"]
    return write(tmp_path / "broken.npz", params=params)


@pytest.fixture
def image_dir(tmp_path):
    d = tmp_path / "img"
    d.mkdir()
    write_image(str(d / "crop.png"), read_image(list_images(photos_dir())[0])[:24, :24])
    return d


def test_infer_refuses_it(tmp_path, capsys, broken, image_dir):
    assert infer_main(["--checkpoint", broken, "--image", str(image_dir / "crop.png"),
                       "--out", str(tmp_path / "o.png")]) == 2
    one_line_error(capsys, "broken.npz", "head.w")


def test_evaluate_refuses_it(capsys, broken, image_dir):
    assert evaluate_main(["--checkpoint", broken, "--hr-dir", str(image_dir), "--scale", "2"]) == 2
    one_line_error(capsys, "broken.npz", "head.w")


def test_vectors_refuses_it(tmp_path, capsys, broken):
    assert vectors_main(["--checkpoint", broken, "--out", str(tmp_path / "vec")]) == 2
    one_line_error(capsys, "broken.npz", "head.w")
    assert not (tmp_path / "vec").exists()


def test_train_init_refuses_it(tmp_path, capsys, image_dir):
    params, state = model(CFG.with_bits("32/32/32"))
    del params["head.w"]
    path = write(tmp_path / "broken.npz", CFG.with_bits("32/32/32"), params, state)
    assert train_main(["--init", path, "--bits", "8/8/8", "--blocks", "1", "--channels", "4",
                       "--steps", "1", "--val-dir", str(image_dir), "--out", str(tmp_path / "o")]) == 2
    one_line_error(capsys, "broken.npz", "head.w")
    assert not (tmp_path / "o").exists()
