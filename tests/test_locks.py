"""File locks: a lock taken without waiting is refused while another holds it, and says who."""

import pytest

from pipeline.locks import LockHeld, file_lock


def test_an_exclusive_lock_refuses_a_second_and_names_its_holder(tmp_path):
    lock = tmp_path / "run" / ".lock"  # the folder is made on the way
    with file_lock(lock, wait=False, holder="pid 1 since noon"):
        # flock locks belong to the open file, so a second open in this process conflicts too
        with pytest.raises(LockHeld) as refused, file_lock(lock, shared=True, wait=False):
            pass
        assert refused.value.holder == "pid 1 since noon"
    with file_lock(lock, wait=False):  # released when the block ended
        pass


def test_shared_locks_coexist_and_keep_the_holder_note(tmp_path):
    lock = tmp_path / ".lock"
    with file_lock(lock, holder="pid 2"):
        pass
    with file_lock(lock, shared=True, wait=False), file_lock(lock, shared=True, wait=False):
        with pytest.raises(LockHeld), file_lock(lock, wait=False):
            pass
    assert lock.read_text(encoding="utf-8") == "pid 2"


def test_an_error_in_the_block_releases_the_lock(tmp_path):
    lock = tmp_path / ".lock"
    with pytest.raises(KeyError), file_lock(lock):
        raise KeyError("the block failed")
    with file_lock(lock, wait=False):
        pass
