"""The bundled digits dataset: shapes, fixed stratified split, determinism, framing, statistics."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lib.data import load_dataset
from lib.data.digits import stratified_split


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", Path("/nonexistent"))  # needs no files


def test_shapes_and_types(digits) -> None:
    assert digits.name == "digits" and digits.num_classes == 10
    assert len(digits.train_x) + len(digits.test_x) == 1797
    assert digits.train_x.shape[1:] == (1, 32, 32) and digits.test_x.shape[1:] == (1, 32, 32)
    assert digits.train_x.dtype == torch.uint8 and digits.test_x.dtype == torch.uint8
    assert digits.train_y.dtype == torch.int64 and digits.test_y.dtype == torch.int64
    assert digits.train_x.is_contiguous() and digits.test_x.is_contiguous()
    assert digits.train_x.max() > 200  # scaled to 0..255, not left at 0..16


def test_split_is_stratified_20_percent(digits) -> None:
    train_counts = digits.train_y.bincount(minlength=10)
    test_counts = digits.test_y.bincount(minlength=10)
    assert (train_counts > 0).all() and (test_counts > 0).all()
    totals = train_counts + test_counts
    expected_test = torch.tensor([round(0.2 * n) for n in totals.tolist()])
    assert torch.equal(test_counts, expected_test)
    assert len(digits.test_x) == 359


def test_deterministic_across_calls(digits) -> None:
    again = load_dataset("digits", Path("/nonexistent"))
    for field in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(again, field), getattr(digits, field))
    assert again.mean == digits.mean and again.std == digits.std


def test_two_pixel_zero_border(digits) -> None:
    for x in (digits.train_x, digits.test_x):
        assert not x[:, :, :2].any() and not x[:, :, 30:].any()
        assert not x[:, :, :, :2].any() and not x[:, :, :, 30:].any()
        assert x[:, :, 2:30, 2:30].any()


def test_mean_std_sane(digits) -> None:
    (mean,), (std,) = digits.mean, digits.std
    assert 0.1 < mean < 0.4 and 0.2 < std < 0.45
    assert mean == pytest.approx(digits.train_x.double().mean().item() / 255, rel=1e-12)
    assert std == pytest.approx(digits.train_x.double().std(unbiased=False).item() / 255, rel=1e-9)


def test_split_partitions_indices_and_is_seeded() -> None:
    labels = torch.tensor([0] * 10 + [1] * 5 + [2] * 3)
    train, test = stratified_split(labels, 0.2, seed=0)
    assert sorted(torch.cat([train, test]).tolist()) == list(range(18))
    assert labels[test].bincount(minlength=3).tolist() == [2, 1, 1]
    assert train.tolist() == sorted(train.tolist())
    again_train, again_test = stratified_split(labels, 0.2, seed=0)
    assert torch.equal(train, again_train) and torch.equal(test, again_test)


def test_the_bundled_file_read_directly_equals_scikit_learns_load_digits() -> None:
    """The dataset reads scikit-learn's digits CSV without importing scikit-learn; here it is checked against
    scikit-learn's own reader, image by image and label by label."""
    from sklearn.datasets import load_digits as sklearn_load_digits

    from lib.data.digits import bundled_csv, read_csv

    images, labels = read_csv(bundled_csv())
    bunch = sklearn_load_digits()
    assert torch.equal(images, torch.from_numpy(bunch.images)) and images.dtype == torch.float64
    assert torch.equal(labels, torch.from_numpy(bunch.target).to(torch.int64))


def test_a_digits_file_of_the_wrong_shape_is_one_error(tmp_path: Path) -> None:
    from lib.data.digits import read_csv
    from lib.errors import UserError

    bad = tmp_path / "digits.csv"
    bad.write_text("0,1,2\n3,4,5\n")
    with pytest.raises(UserError, match="3 columns per row, expected 64 pixels and a label"):
        read_csv(bad)
