"""Data-parallel training: 2 CPU processes (gloo, via torchrun) end with the weights of one process."""
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

SCRIPT = Path(__file__).with_name("ddp_script.py")


def run(args, tmp_path, ok=True):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    env["CUDA_VISIBLE_DEVICES"] = ""  # the gloo (CPU) path, also on a machine with a GPU
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert (proc.returncode == 0) == ok, proc.stderr[-3000:]
    assert "terminate called" not in proc.stderr  # no abort at interpreter exit (gloo threads vs finalisation)
    return proc


def test_two_process_ddp_matches_single_process(tmp_path):
    run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(SCRIPT), "ddp"], tmp_path)
    run([str(SCRIPT), "single"], tmp_path)
    ddp, single = load_file(str(tmp_path / "ddp/model.safetensors")), load_file(str(tmp_path / "single/model.safetensors"))
    start = {k: v.clone() for k, v in single.items()}
    assert ddp.keys() == single.keys()
    for k in single:
        torch.testing.assert_close(ddp[k], single[k], atol=1e-5, rtol=1e-5)
    # and training moved the weights, so the equality is not trivial
    torch.manual_seed(0)
    from varilab.models import build_model

    init = build_model("vae", 12, latent_dim=3, hidden=[16]).state_dict()
    assert max((start[k] - init[k]).abs().max().item() for k in init) > 1e-2


def test_ddp_divergence_stops_every_rank_with_the_message_and_keeps_the_checkpoint(tmp_path):
    proc = run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(SCRIPT), "diverge"],
               tmp_path, ok=False)
    assert proc.stderr.count("TrainingDiverged") >= 2  # both ranks stop, neither hangs in a collective
    assert "loss became nan at epoch 2, step 1" in proc.stderr
    assert "last good checkpoint (epoch 1)" in proc.stderr
    assert (tmp_path / "diverge/checkpoint.safetensors").exists()
