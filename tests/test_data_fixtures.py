"""The dataset builders of tests/helpers/datasets.py write each benchmark's real file structure."""

import scipy.io

from tests.helpers.datasets import make_live, make_livec


def test_livec_fixture_has_real_mat_structure(tmp_path):
    make_livec(tmp_path)
    names = scipy.io.loadmat(tmp_path / "Data" / "AllImages_release.mat")["AllImages_release"]
    mos = scipy.io.loadmat(tmp_path / "Data" / "AllMOS_release.mat")["AllMOS_release"]
    assert names.dtype == object and names.shape == (12, 1) and mos.shape == (1, 12)


def test_live_fixture_has_real_mat_structure(tmp_path):
    make_live(tmp_path)
    content = scipy.io.loadmat(tmp_path / "dmos_realigned.mat")
    assert content["dmos_new"].shape == content["orgs"].shape == (1, 12)
    assert scipy.io.loadmat(tmp_path / "refnames_all.mat")["refnames_all"].shape == (1, 12)
