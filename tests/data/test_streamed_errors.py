"""A streamed folder whose file fails to decode after its header passed: one line from a
DataLoader worker, or with skip_bad a deterministic substitute of the same class."""

import re

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from cnnlab.data.lazy import LazyImages, Rows, StreamedImageError, memory_budget
from cnnlab.errors import CnnlabError


def _files(tmp_path, n=6, bad=(3,)):
    rng = np.random.default_rng(0)
    files = []
    for i in range(n):
        img = rng.integers(0, 256, (8, 8), dtype=np.uint8)
        img[0, 0] = 10 * i  # which file a row came from
        Image.fromarray(img).save(tmp_path / f"{i}.png")
        files.append(tmp_path / f"{i}.png")
    for i in bad:
        raw = files[i].read_bytes()
        files[i].write_bytes(raw[: len(raw) // 2 + 20])  # header intact, pixels cut short
    return files


def _batches(images: LazyImages, labels, order):
    loader = DataLoader(Rows(images, torch.tensor(labels)), batch_sampler=order, num_workers=2)
    return [(x[:, 0, 0, 0].tolist(), y.tolist()) for x, y in loader]


def test_a_worker_error_arrives_as_one_line_naming_the_file(tmp_path):
    files = _files(tmp_path)
    images = LazyImages(files, 1, (8, 8), labels=[0, 0, 0, 0, 1, 1])
    with pytest.raises(StreamedImageError) as err:
        _batches(images, [0, 0, 0, 0, 1, 1], [[0, 1], [2, 3], [4, 5]])
    line = rf"{re.escape(str(files[3]))}: corrupt or truncated image \(.+\) \(pass --skip-bad to skip such files\)"
    assert re.fullmatch(line, str(err.value)) and isinstance(err.value, CnnlabError)


def test_the_class_keeps_only_the_original_line_of_a_worker_traceback():
    wrapped = (
        "Caught StreamedImageError in DataLoader worker process 1.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n    raise StreamedImageError(msg)\n'
        "cnnlab.data.lazy.StreamedImageError: a.png: corrupt (b: c) (pass --skip-bad)\n"
    )
    assert str(StreamedImageError(wrapped)) == "a.png: corrupt (b: c) (pass --skip-bad)"
    assert str(StreamedImageError("plain: message")) == "plain: message"


def test_skip_bad_substitutes_the_next_of_its_class_deterministically(tmp_path, capfd):
    files = _files(tmp_path, bad=(1, 3))
    labels = [0, 0, 1, 0, 1, 0]
    images = LazyImages(files, 1, (8, 8), labels=labels, skip_bad=True)
    order = [[0, 1], [2, 3], [4, 5]]
    first = _batches(images, labels, order)
    assert first == [([0, 50], [0, 0]), ([20, 50], [1, 0]), ([40, 50], [1, 0])]
    assert _batches(images, labels, order) == first  # the same in every epoch and worker
    err = capfd.readouterr().err
    assert f"skipped {files[1]}: corrupt" in err and f"using {files[3]}" not in err
    assert re.search(
        rf"skipped {re.escape(str(files[3]))}: corrupt .*; using {re.escape(str(files[5]))} in its place",
        err,
    )
    # in the main process too (statistics, evaluation), and through select()
    assert images[0:2][:, 0, 0, 0].tolist() == [0, 50]
    assert images.select(torch.tensor([1, 0]))[0:2][:, 0, 0, 0].tolist() == [0, 0]


def test_a_class_with_nothing_left_is_an_error(tmp_path):
    files = _files(tmp_path, n=3, bad=(0,))
    images = LazyImages(files, 1, (8, 8), labels=[0, 1, 1], skip_bad=True)
    with pytest.raises(StreamedImageError, match=r"0.png: .*no other image of its class decodes"):
        images[0]


def test_memory_budget_variable_is_checked(monkeypatch):
    monkeypatch.setenv("CNNLAB_MEMORY_BUDGET", "lots")
    with pytest.raises(
        CnnlabError, match=r"CNNLAB_MEMORY_BUDGET='lots': expected a number of bytes"
    ):
        memory_budget()
