"""npgpt/files.py: a failed write leaves the old file; a finished one has normal permissions."""

import os

import pytest

from npgpt.files import atomic_path


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        open(tmp, "w").write("half of the new")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["model.safetensors"]  # no temp file left behind


def test_finished_write_replaces_with_umask_permissions(tmp_path):
    target = tmp_path / "sub" / "out.bin"
    old = os.umask(0o022)
    try:
        with atomic_path(target) as tmp:
            open(tmp, "w").write("new")
    finally:
        os.umask(old)
    assert target.read_text() == "new"
    assert target.stat().st_mode & 0o777 == 0o644
