"""`facelab swap` behaves: its inputs are checked before any work, every training option is reachable from
its flags and its config file, and Ctrl-C while training saves and stops (exit 130, no merge of an
undertrained model), on short cuts of the real sample clips."""

from __future__ import annotations

import yaml
import pytest

from facelab.cli import main
from facelab.cli.swap import split_config_file
from facelab.core.errors import FacelabError
from facelab.io.video import iter_frames, write_video
from facelab.swap import train as swap_train

pytestmark = pytest.mark.usefixtures("one_thread")
TINY_NET = {"model": "saehd", "resolution": 64, "ae_dims": 32, "e_dims": 8, "d_dims": 8, "d_mask_dims": 4,
            "workers": 0}


@pytest.fixture(scope="module")
def clips(sample_clips, tmp_path_factory):
    """Eight-frame cuts of the src and dst sample clips (two real men)."""
    root = tmp_path_factory.mktemp("oneshot")
    cuts = []
    for clip, name in zip(sample_clips[:2], ("src", "dst")):
        frames = [f for i, f in iter_frames(clip) if i < 8]
        write_video(root / f"{name}.mp4", frames, 25)
        cuts.append(root / f"{name}.mp4")
    return cuts


def test_a_wrong_input_is_refused_before_any_work(clips, tmp_path, capsys):
    ws = tmp_path / "ws"
    args = ["-o", str(tmp_path / "out.mp4"), "--workspace", str(ws)]
    assert main(["swap", str(tmp_path / "no_such_src"), str(clips[1]), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no_such_src" in err and "src" in err
    assert main(["swap", str(clips[0]), str(clips[1]), "--dst-person", str(tmp_path / "nobody"), *args]) == 2
    assert "nobody" in capsys.readouterr().err
    assert not ws.exists()  # nothing extracted


def test_ctrl_c_while_training_saves_and_stops_before_merge(clips, tmp_path, monkeypatch):
    """Training options from the config file's train: section and from flags both reach the model; a
    Ctrl-C at iteration 3 leaves the saved model and no merged frames or video; the same command resumes."""
    real_step = swap_train.Trainer.step

    def step(self, batch):
        if self.iteration == 3:
            raise KeyboardInterrupt
        return real_step(self, batch)

    monkeypatch.setattr(swap_train.Trainer, "step", step)
    config = tmp_path / "swap.yaml"
    config.write_text(yaml.safe_dump({"train": {**TINY_NET, "resolution": 96}, "erode": 5, "batch_size": 2}))
    ws, out = tmp_path / "ws", tmp_path / "out.mp4"
    argv = ["swap", str(clips[0]), str(clips[1]), "-o", str(out), "--workspace", str(ws), "--config", str(config),
            "--resolution", "64", "--iterations", "40"]
    assert main(argv) == 130
    saved = yaml.safe_load((ws / "model" / "config.yaml").read_text())
    assert {k: saved[k] for k in TINY_NET} == TINY_NET and saved["batch_size"] == 2  # the flag beat the file's 96
    assert yaml.safe_load((ws / "model" / "state.yaml").read_text())["iteration"] == 3
    assert not (ws / "data_dst" / "merged").exists() and not out.exists()


def test_the_config_file_goes_to_the_stage_that_has_each_option():
    parts = split_config_file({"train": {"resolution": 64}, "merge": {"blur": 3}, "erode": 5, "ae_dims": 32,
                               "device": "cpu"}, "swap.yaml")
    assert parts == {"train": {"resolution": 64, "ae_dims": 32, "device": "cpu"},
                     "merge": {"blur": 3, "erode": 5, "device": "cpu"}}
    with pytest.raises(FacelabError, match="swap.yaml: unknown option colour"):
        split_config_file({"colour": "rct"}, "swap.yaml")


def test_a_new_swap_on_the_cpu_trains_the_small_network_and_a_flag_changes_one_setting(clips, tmp_path, monkeypatch):
    """No training option: the 64 px CPU network for 9000 iterations (docs/training.md, issue 20); one flag
    changes that setting only; a GPU gets the SAEHD defaults."""
    import torch

    from facelab.swap.config import SwapConfig, swap_default
    from facelab.workflow import swap as workflow

    cfg = workflow.training_config(tmp_path / "model", None, None)
    assert (cfg.model, cfg.resolution, cfg.archi, cfg.ae_dims, cfg.batch_size, cfg.target_iter) == \
        ("saehd", 64, "liae-ud", 64, 8, 9000)
    class Called(Exception):
        pass

    def swap(*args, **kwargs):
        raise Called(kwargs["train_cfg"])

    monkeypatch.setattr(workflow, "swap", swap)
    with pytest.raises(Called) as called:
        main(["swap", str(clips[0]), str(clips[1]), "-o", str(tmp_path / "o.mp4"), "--batch-size", "4"])
    cfg = called.value.args[0]
    assert (cfg.resolution, cfg.ae_dims, cfg.batch_size, cfg.target_iter) == (64, 64, 4, 9000)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    gpu = swap_default("auto")
    assert (gpu.resolution, gpu.ae_dims, gpu.batch_size, gpu.target_iter) == \
        (SwapConfig().resolution, SwapConfig().ae_dims, SwapConfig().batch_size, 20000)
