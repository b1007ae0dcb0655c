"""Sharded parameters (sharded.py) on two CPU ranks: FSDP2 runs on gloo, so its paths are tested here and not only
on a GPU: the fp32 EMA updates each rank's shards, and the EMA teacher's checkpoint round-trips."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pmd.sharded import fsdp_version, local_part

HARNESS = Path(__file__).parent / "fsdp2_harness.py"
TORCHRUN = Path(sys.executable).parent / "torchrun"


@pytest.mark.slow  # torchrun, two ranks: ~9 s
@pytest.mark.skipif(shutil.which("torchrun", path=str(TORCHRUN.parent)) is None, reason="torchrun not installed")
def test_fsdp2_ema_and_teacher_checkpoint_on_two_ranks(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(TORCHRUN), "--standalone", "--nproc_per_node", "2", str(HARNESS), str(tmp_path)],
                          capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        result = json.loads((tmp_path / f"rank-{rank}.json").read_text())
        assert result == {"sharded": True, "ema_matches": True, "round_trip": True, "still_sharded": True}, rank


def test_local_part_of_a_plain_and_a_partitioned_parameter():
    p = torch.nn.Parameter(torch.ones(4))
    assert local_part(p).data_ptr() == p.data.data_ptr()
    p.ds_tensor = torch.zeros(2)  # a ZeRO-3 parameter: this rank's partition
    assert local_part(p).shape == (2,)


def test_fsdp_version_reads_the_plugin():
    from types import SimpleNamespace

    plain = SimpleNamespace(is_fsdp_enabled=False)
    two = SimpleNamespace(is_fsdp_enabled=True, accelerator=SimpleNamespace(
        state=SimpleNamespace(fsdp_plugin=SimpleNamespace(fsdp_version=2))))
    assert fsdp_version(plain) == 0 and fsdp_version(two) == 2
