import numpy as np
import pytest
import torch

from cnnlab.data.dataset import ImageSet, from_numpy
from cnnlab.errors import CnnlabError


def _set(n_per_class=(50, 30, 20)):
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(n_per_class)])
    images = torch.arange(len(labels), dtype=torch.int64).remainder(256).to(torch.uint8)
    return ImageSet(
        images.view(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous(), labels, ["a", "b", "c"]
    )


def test_split_is_stratified_disjoint_and_seeded():
    data = _set()
    train, val = data.split(0.2, seed=3)
    assert val.class_counts() == [10, 6, 4] and train.class_counts() == [40, 24, 16]
    again_train, again_val = data.split(0.2, seed=3)
    assert torch.equal(val.images, again_val.images)
    _, other_val = data.split(0.2, seed=4)
    assert not torch.equal(val.images, other_val.images)
    seen = torch.cat([train.images[:, 0, 0, 0], val.images[:, 0, 0, 0]]).sort().values
    assert torch.equal(seen, data.images[:, 0, 0, 0].sort().values)


def test_stats_match_numpy():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(20, 3, 4, 4), dtype=np.uint8)
    data = from_numpy(x, np.zeros(20, np.int64), ["z"], "t")
    mean, std = data.stats()
    ref = x.astype(np.float64) / 255
    np.testing.assert_allclose(mean, ref.mean(axis=(0, 2, 3)), rtol=1e-9)
    np.testing.assert_allclose(std, ref.std(axis=(0, 2, 3)), rtol=1e-9)


def test_bad_labels_and_layouts_are_named():
    with pytest.raises(CnnlabError, match="labels span 0..5 but there are 2 classes"):
        ImageSet(
            torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 5]), ["a", "b"], "src"
        )
    with pytest.raises(CnnlabError, match="pixel values must lie in 0..255"):
        from_numpy(np.full((1, 2, 2), 300.0), np.zeros(1), None, "src")
    nhwc = from_numpy(np.zeros((2, 5, 6, 3), np.uint8), np.zeros(2), None, "src")
    assert nhwc.shape == (3, 5, 6)
