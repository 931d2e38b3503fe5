import numpy as np
import pytest
import torch

from cnnlab.data import load_data, save_idx_set
from cnnlab.data.dataset import ImageSet
from cnnlab.data.names import encode_name, read_names, write_names
from cnnlab.errors import CnnlabError

TRICKY = [
    " lead",
    "trail ",
    "  ",
    "\tt",
    "new\nline",
    "back\\slash",
    "esc\\n",
    "cr\rlf",
    "\x00nul",
    "\x0bvt",
    "\u2028sep",
    "\u3000wide\u3000",
    "\udcffundecodable",
    "C:\\dir",
    "日本語",
    "$x^2$",
    "<b>&amp;</b>",
    "\\x41",
]


def test_every_name_round_trips_exactly(tmp_path):
    path = write_names(tmp_path / "classes.txt", TRICKY)
    assert read_names(path, 100) == TRICKY
    lines = path.read_text(encoding="utf-8").split("\n")
    assert len(lines) == len(TRICKY) + 1 and lines[-1] == ""  # one line per name, always
    assert all(line == line.strip() for line in lines)


def test_plain_old_files_read_as_they_always_did(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_bytes(b"cat\r\n  dog  \nfish\\d\n\n\n")
    assert read_names(path, 100) == ["cat", "dog", "fish\\d"]


def test_refused_names_and_files(tmp_path):
    with pytest.raises(CnnlabError, match="non-empty name"):
        encode_name("")
    path = tmp_path / "classes.txt"
    for content, message in [
        (b"a\n \nb\n", "line 2 is blank"),
        (b"a\x00b\n", "binary data"),
        (b"\xc3(\n", "not UTF-8 text"),
        (b"a\nb\nc\nd\n", "4 class names, more than the cap of 3"),
    ]:
        path.write_bytes(content)
        with pytest.raises(CnnlabError, match=message):
            read_names(path, 3)


def test_an_idx_set_keeps_its_names(tmp_path):
    names = ["", "b"]
    data = ImageSet(torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1]), names, "t")
    with pytest.raises(CnnlabError, match="non-empty name"):
        save_idx_set(data, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()  # refused before any file is written
    data.classes = TRICKY[:4]
    data.labels = torch.tensor([3, 1])
    save_idx_set(data, tmp_path / "idx")
    back = load_data(str(tmp_path / "idx"))
    assert back.classes == TRICKY[:4] and back.labels.tolist() == [3, 1]
    assert np.array_equal(back.images.numpy(), data.images.numpy())
