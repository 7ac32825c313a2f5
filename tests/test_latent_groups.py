import numpy as np
import pytest

from sganc_stream.latent.groups import row_weights, stage_groups


def test_ffhq_groups_match_the_paper():
    assert stage_groups(18) == [(0, 7), (7, 13), (13, 18)]


@pytest.mark.parametrize("rows", [10, 12, 14, 16, 18, 6, 3])
def test_groups_partition_rows(rows):
    groups = stage_groups(rows)
    assert len(groups) == 3 and groups[0][0] == 0 and groups[-1][1] == rows
    assert all(a < b for a, b in groups) and all(groups[i][1] == groups[i + 1][0] for i in range(2))


def test_single_group():
    assert stage_groups(18, "single") == [(0, 18)]
    with pytest.raises(ValueError):
        stage_groups(18, "odd")


def test_distortion_weights():
    w = row_weights(18, stage_groups(18))
    assert np.all(w[:7] == 1.0)
    assert w[-1] == pytest.approx(0.01)
    assert np.all(np.diff(w[6:]) < 0)
    assert np.allclose(np.diff(w[6:]), np.diff(w[6:])[0])  # linear
