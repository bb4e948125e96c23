"""``--out`` of ``iai infer`` and ``iai diagnose`` is checked before any work starts."""

import pytest

from iai_prob.cli import main
from iai_prob.cli.output import check_output_file


@pytest.mark.parametrize("command", ["infer", "diagnose"])
@pytest.mark.parametrize("where", ["directory", "under a file"])
def test_an_unwritable_out_fails_before_inference(
    command, where, tmp_path, grouped_csv, capsys, monkeypatch
):
    import iai_prob.cli.loading

    def no_inference(*args, **kwargs):
        raise AssertionError("the checkpoint was loaded: --out is checked too late")

    monkeypatch.setattr(iai_prob.cli.loading, "load_checkpoint", no_inference)
    suffix = ".nc" if command == "infer" else ".html"
    if where == "directory":
        out = tmp_path / f"results{suffix}"
        out.mkdir()
        expected = f"--out '{out}' is a directory; name a"
    else:
        (tmp_path / "notes.txt").write_text("a file")
        out = tmp_path / "notes.txt" / f"post{suffix}"
        expected = f"--out '{out}' lies under '{tmp_path / 'notes.txt'}', which is a file"
    argv = [command, "linear_regression", str(grouped_csv), "--x", "x0:x7", "--y", "y"]
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"iai {command}: error: {expected}") and "\n" not in err


def test_a_new_folder_is_fine_and_the_suffix_is_checked(tmp_path):
    out = tmp_path / "new" / "deeper" / "post.nc"
    assert check_output_file(str(out), (".nc",), "a netCDF file") == out
    assert not out.parent.exists()  # created only when the file is written
    with pytest.raises(ValueError, match=r"--out must name an HTML file ending in \.html"):
        check_output_file(str(tmp_path / "r.txt"), (".html", ".htm"), "an HTML file")


def _no_checkpoint(monkeypatch):
    """Make loading the checkpoint fail the test: ``--out`` must be refused before."""
    import iai_prob.cli.loading

    def no_inference(*args, **kwargs):
        raise AssertionError("the checkpoint was loaded: --out is checked too late")

    monkeypatch.setattr(iai_prob.cli.loading, "load_checkpoint", no_inference)


@pytest.mark.parametrize("command", ["infer", "diagnose"])
@pytest.mark.parametrize("folder", ["/proc", "/sys"])
def test_a_folder_where_no_file_can_be_created_fails_before_inference(
    command, folder, grouped_csv, capsys, monkeypatch
):
    # root passes every permission check, so only creating a file tells (tests run as root)
    if not __import__("os").path.isdir(folder):
        pytest.skip(f"no {folder} on this system")
    _no_checkpoint(monkeypatch)
    out = f"{folder}/p{'.nc' if command == 'infer' else '.html'}"
    argv = [command, "linear_regression", str(grouped_csv), "--x", "x0:x7", "--y", "y"]
    assert main([*argv, "--out", out]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"iai {command}: error: --out '{out}': cannot create a file in ")
    assert f"'{folder}'" in err and "\n" not in err


def test_a_missing_folder_is_probed_in_its_nearest_existing_parent(tmp_path, monkeypatch):
    import tempfile

    probed = []
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        probed.append(dir)
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    check_output_file(str(tmp_path / "a" / "b" / "post.nc"), (".nc",), "a netCDF file")
    assert probed == [tmp_path] and sorted(tmp_path.iterdir()) == []  # the probe is gone


def test_an_existing_read_only_file_is_refused(tmp_path, monkeypatch):
    import os

    out = tmp_path / "post.nc"
    out.write_bytes(b"")
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if p == out else real(p, mode))
    with pytest.raises(ValueError, match=r"post\.nc' exists and is read-only; remove it"):
        check_output_file(str(out), (".nc",), "a netCDF file")
