"""tte_scale.outputs: a command replaces only folders it marked as its own, never an input."""

from __future__ import annotations

import pytest

from tte_scale.errors import InputError
from tte_scale.outputs import MARKER, check_replaceable, mark, read_marker, remove_own


def test_absent_and_empty_folders_are_replaceable(tmp_path):
    check_replaceable(tmp_path / "absent", "labels")
    (tmp_path / "empty").mkdir()
    remove_own(tmp_path / "empty", "labels")
    assert not (tmp_path / "empty").exists()


def test_a_foreign_folder_is_refused_and_kept(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.docx").write_text("years of work")
    with pytest.raises(InputError, match=rf"not written by `tte-scale labels` \(no {MARKER}\)"):
        remove_own(out, "labels")
    assert (out / "thesis.docx").read_text() == "years of work"


def test_another_commands_output_is_refused(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    mark(out, "shard")
    with pytest.raises(InputError, match="written by `tte-scale shard`, not `tte-scale labels`"):
        check_replaceable(out, "labels")
    assert read_marker(out)["command"] == "shard"


def test_own_output_is_removed(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "tte.zarr").mkdir()
    mark(out, "labels", fingerprint="abc")
    assert read_marker(out)["fingerprint"] == "abc"
    remove_own(out, "labels")
    assert not out.exists()


def test_inputs_are_never_replaced(tmp_path):
    meds = tmp_path / "cohort"
    (meds / "data").mkdir(parents=True)
    mark(meds, "labels")  # even a folder that carries our marker
    for out in (meds, tmp_path):  # the input itself, or a folder holding it
        with pytest.raises(InputError, match="holds the input"):
            remove_own(out, "labels", inputs=[meds])
    assert (meds / "data").is_dir()
    check_replaceable(meds / "labels", "labels", inputs=[meds])  # beside the input's data: fine
    check_replaceable(tmp_path / "labels", "labels", inputs=[meds, None, "s3://bucket/x"])


def test_a_file_in_place_of_the_folder_is_refused(tmp_path):
    f = tmp_path / "out"
    f.write_text("x")
    with pytest.raises(InputError, match="exists and is not a folder"):
        remove_own(f, "labels")
    assert f.read_text() == "x"
