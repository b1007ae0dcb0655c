"""Where trackers' files go: tensorboard's events into RUN/tb (tiny random model, CPU)."""

from __future__ import annotations

from types import SimpleNamespace

from transformers.integrations import TensorBoardCallback

from pmd.trainer import TENSORBOARD_DIR, tensorboard_into


def _tb_callback(logging_dir):
    """A TensorBoardCallback as the Trainer builds it (tensorboard itself need not be installed for this)."""
    cb = object.__new__(TensorBoardCallback)
    cb.logging_dir, cb.tb_writer = logging_dir, None
    return cb


def test_tensorboard_events_go_to_the_run_directory_unless_the_user_chose(tmp_path):
    ours, theirs, other = _tb_callback(None), _tb_callback("/elsewhere"), object()
    trainer = SimpleNamespace(callback_handler=SimpleNamespace(callbacks=[other, ours, theirs]))
    tensorboard_into(trainer, tmp_path / TENSORBOARD_DIR)
    assert ours.logging_dir == str(tmp_path / "tb")
    assert theirs.logging_dir == "/elsewhere"  # TENSORBOARD_LOGGING_DIR, transformers' own switch, still wins
