"""Checkpoint writes that fail: a full disk mid-save, a folder that cannot be written, a writer that dies. Each ends
in one error naming the folder and the cause, with the previous checkpoint still the latest (its .tmp folder gone,
the tracker untouched) and resumable; the file writers are threads of the saving process, never forked ones."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from megatron.core.dist_checkpointing.strategies import filesystem_async
from megatron.core.dist_checkpointing.strategies.filesystem_async import FileSystemWriterAsync
from train_helpers import SEQS, STARTS, make_spec, make_tiny_qwen2, sum_log_prob_loss

from rlpipe.train import checkpoint
from rlpipe.train.checkpoint import CheckpointWriteError
from rlpipe.train.dist_ckpt import TRACKER_FILE
from rlpipe.train.trainer import MegatronTrainer

LOSS = sum_log_prob_loss(denominator=25.0)


@pytest.fixture
def saved(world_of_one, tmp_path: Path) -> tuple[MegatronTrainer, Path]:
    """A trainer one step in, with its checkpoint of iteration 2 in tmp_path/ckpt, then one step further."""
    folder = make_tiny_qwen2(tmp_path / "hf")
    trainer = MegatronTrainer(make_spec(folder))
    trainer.load_hf(folder)
    trainer.train_step(SEQS, STARTS, LOSS)
    ckpt = tmp_path / "ckpt"
    trainer.save_checkpoint(ckpt, iteration=2, extra_state={"cursor": 2})
    trainer.train_step(SEQS, STARTS, LOSS)
    return trainer, ckpt


def assert_iteration_2_is_still_the_latest(trainer: MegatronTrainer, ckpt: Path) -> None:
    assert sorted(p.name for p in ckpt.iterdir()) == ["iter_0000002", TRACKER_FILE]  # no .tmp left behind
    assert (ckpt / TRACKER_FILE).read_text() == "2"
    assert trainer.load_checkpoint(ckpt) == (2, {"cursor": 2})  # rerunning resumes from it


def test_disk_full_mid_save_is_one_clear_error_and_keeps_the_previous_checkpoint(saved, monkeypatch) -> None:
    trainer, ckpt = saved

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(ckpt / "iter_0000004.tmp" / "__0_0.distcp"))

    monkeypatch.setattr(filesystem_async, "_write_item", disk_full)  # megatron's per-tensor write
    with pytest.raises(CheckpointWriteError) as info:
        trainer.save_checkpoint(ckpt, iteration=4, extra_state={"cursor": 4})
    message = str(info.value)
    assert message.startswith(f"could not write checkpoint 4 to {ckpt}: disk full")
    assert "iter_0000002" in message and "rerun" in message
    assert_iteration_2_is_still_the_latest(trainer, ckpt)

    monkeypatch.undo()  # space again: the next save goes through
    trainer.save_checkpoint(ckpt, iteration=4, extra_state={"cursor": 4})
    assert trainer.load_checkpoint(ckpt) == (4, {"cursor": 4})


def test_failure_to_publish_leaves_the_tracker_alone(saved, monkeypatch) -> None:
    """The last step (rename into place, then the tracker) fails on a read-only file system."""
    trainer, ckpt = saved

    def read_only(src: object, dst: object) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dst))

    monkeypatch.setattr(checkpoint.os, "replace", read_only)
    with pytest.raises(CheckpointWriteError, match=f"to {ckpt}: read-only file system"):
        trainer.save_checkpoint(ckpt, iteration=4)
    monkeypatch.undo()
    assert_iteration_2_is_still_the_latest(trainer, ckpt)


def test_permission_denied_mid_save(saved, monkeypatch) -> None:
    """A save folder the run may not write (chmod cannot show it here: the tests run as root, who may)."""
    trainer, ckpt = saved

    def denied(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EACCES, os.strerror(errno.EACCES), str(ckpt / "iter_0000004.tmp" / "__0_0.distcp"))

    monkeypatch.setattr(filesystem_async, "_write_item", denied)
    with pytest.raises(CheckpointWriteError, match=f"to {ckpt}: permission denied"):
        trainer.save_checkpoint(ckpt, iteration=4)
    monkeypatch.undo()
    assert_iteration_2_is_still_the_latest(trainer, ckpt)


def test_save_forks_no_writer_process(saved, monkeypatch) -> None:
    """megatron's writer forks a process per file and would wait forever on one that died; rlpipe's writes from
    threads (with a fork, this test fails at once instead of passing)."""
    trainer, ckpt = saved

    def no_fork() -> int:
        raise AssertionError("the checkpoint writer forked a process")

    monkeypatch.setattr(os, "fork", no_fork)
    trainer.save_checkpoint(ckpt, iteration=4, extra_state={"cursor": 4})
    assert trainer.load_checkpoint(ckpt) == (4, {"cursor": 4})


class WriterDied(BaseException):
    """Stands in for a writer stopped by something no `except Exception` catches."""


def test_writer_that_dies_is_an_error_not_a_wait(saved, monkeypatch) -> None:
    trainer, ckpt = saved

    def dies(*args: object, **kwargs: object) -> None:
        raise WriterDied

    monkeypatch.setattr(FileSystemWriterAsync, "write_preloaded_data", staticmethod(dies))
    with pytest.raises(WriterDied):
        trainer.save_checkpoint(ckpt, iteration=4)
    monkeypatch.undo()
    assert_iteration_2_is_still_the_latest(trainer, ckpt)
