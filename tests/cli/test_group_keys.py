"""``iai infer --group``: the keys verbatim whatever ``--chunk-rows``; bad files in one line."""

import arviz as az
import numpy as np
import pandas as pd
import pytest
import torch

from iai_prob.cli import main


@pytest.fixture
def keyed_csv(tmp_path, shipped_guide, x_columns):
    """18 rows in groups "007", "7" and "07" (6 each, interleaved)."""
    _, x, y = shipped_guide.family.sample(1, 18, generator=torch.Generator().manual_seed(1))
    frame = pd.DataFrame(x[0].numpy(), columns=x_columns).assign(y=y[0].numpy())
    frame.insert(0, "g", ["007", "7", "07"] * 6)
    frame.to_csv(tmp_path / "keys.csv", index=False)
    return tmp_path / "keys.csv"


def _infer(tmp_path, data, *options):
    out = tmp_path / f"post{len(list(tmp_path.glob('*.nc')))}.nc"
    argv = ["infer", "linear_regression", str(data), "--x", "x0:x7", "--y", "y", "--group", "g"]
    argv += ["--out", str(out), "--num-samples", "20", "--no-progress", *options]
    assert main(argv) == 0
    return az.from_netcdf(out)


def test_infer_keeps_keys_verbatim_for_every_chunk_size(tmp_path, keyed_csv, capsys):
    posteriors = []
    for rows in ("1", "4", "100000"):
        idata = _infer(tmp_path, keyed_csv, "--chunk-rows", rows, "--show", "3")
        printed = capsys.readouterr()
        assert "3 groups of 6 to 6 rows" in printed.err
        assert all(f"w[{key}, 0]" in printed.out for key in ("007", "07", "7"))
        assert [str(key) for key in idata.posterior["group"].values] == ["007", "07", "7"]
        posteriors.append(idata.posterior["w"].values)
    np.testing.assert_array_equal(posteriors[0], posteriors[1])
    np.testing.assert_array_equal(posteriors[0], posteriors[2])


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("header.csv", "g,x0,x1,x2,x3,x4,x5,x6,x7,y\n", "data file 'header.csv' has no rows"),
        (
            "latin.csv",
            "g,x0,x1,x2,x3,x4,x5,x6,x7,y\nd\xe9j\xe0,.1,.2,.3,.4,.5,.6,.7,.8,1\n",
            "UTF-8",
        ),
        ("text.csv.gz", "g,y\nu,1\n", "'text.csv.gz' is not gzip-compressed"),
        ("dup.csv", "g,x0,x1,x2,x3,x4,x5,x6,x7,x0,y\n", "column 'x0' appears 2 times"),
        ("big.csv", "g,x0,x1,x2,x3,x4,x5,x6,x7,y\nu,1,2,3e39,4,5,6,7,8,9\n", "overflows float32"),
    ],
)
def test_unreadable_files_are_one_line(tmp_path, capsys, name, content, message):
    (tmp_path / name).write_bytes(content.encode("latin-1"))
    argv = ["infer", "linear_regression", str(tmp_path / name), "--x", "x0:x7", "--y", "y"]
    argv += ["--group", "g", "--out", str(tmp_path / "o.nc"), "--no-progress"]
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if not line.startswith("iai infer: warning: ")]
    assert len(errors) == 1 and errors[0].startswith("iai infer: error: ") and message in errors[0]
