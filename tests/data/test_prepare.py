import numpy as np
from PIL import Image, ImageDraw

from cnnlab.data.prepare import for_model, mnist_digit


def _digit_photo(size=(300, 200), ink=(20, 20, 40), paper=(235, 230, 220)):
    """A dark '1'-like stroke off-centre on light paper, as a phone photo would be."""
    img = Image.new("RGB", size, paper)
    ImageDraw.Draw(img).line([(60, 40), (70, 250)], fill=ink, width=18)
    return img.transpose(Image.Transpose.TRANSPOSE) if size[0] < size[1] else img


def test_dark_on_light_becomes_mnist_style():
    out = mnist_digit(_digit_photo())
    assert out.shape == (1, 28, 28) and out.dtype == np.uint8
    a = out[0].astype(float)
    assert a.max() == 255 and np.median(a) == 0  # white ink on black
    rows, cols = np.nonzero(a > 30)
    assert rows.max() - rows.min() + 1 <= 21 and cols.max() - cols.min() + 1 <= 21  # fits 20x20
    ys, xs = np.indices(a.shape)
    cy, cx = (ys * a).sum() / a.sum(), (xs * a).sum() / a.sum()
    assert abs(cy - 13.5) <= 1 and abs(cx - 13.5) <= 1  # centred by centre of mass


def test_already_mnist_like_input_is_not_inverted():
    img = Image.new("L", (28, 28), 0)
    ImageDraw.Draw(img).ellipse([8, 6, 20, 22], outline=255, width=3)
    out = mnist_digit(img)
    assert out[0, 0, 0] == 0 and out.max() == 255


def test_blank_image_gives_zeros_and_lenet_input_is_padded():
    assert not mnist_digit(Image.new("L", (40, 40), 255)).any()
    assert for_model(_digit_photo(), "mnist-digit", (1, 32, 32)).shape == (1, 32, 32)
    assert for_model(Image.new("RGB", (50, 40)), "resize", (3, 32, 32)).shape == (3, 32, 32)
