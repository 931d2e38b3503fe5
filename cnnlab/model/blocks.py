"""The blocks of the classic architectures, built from a spec layer's fields and input shape:
ResNet's residual block, GoogLeNet's inception module, DenseNet's dense block and transition.
Each builder takes (fields, input shape, spec) and returns (module, output shape)."""

from __future__ import annotations

from torch import nn

from cnnlab.model import layers as L


def _conv_bn_relu(cin, cout, kernel, stride=1, padding=0, eps=1e-5) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, kernel, stride, padding, bias=False),
        nn.BatchNorm2d(cout, eps=eps),
        nn.ReLU(inplace=True),
    ]


def _need_image(shape):
    if len(shape) != 3:
        raise ValueError(f"needs a (C, H, W) input, got {shape}")


def residual(f, shape, spec):
    _need_image(shape)
    cin, width, stride = shape[0], f["filters"], f["stride"]
    if f["bottleneck"]:
        cout = width * f["expansion"]
        body = nn.Sequential(
            *_conv_bn_relu(cin, width, 1),
            *_conv_bn_relu(width, width, 3, stride, 1),
            nn.Conv2d(width, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
    else:
        cout = width
        body = nn.Sequential(
            *_conv_bn_relu(cin, width, 3, stride, 1),
            nn.Conv2d(width, width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(width),
        )
    if stride == 1 and cin == cout:
        shortcut: nn.Module = nn.Identity()
    elif f["shortcut"] == "pad":
        if cout < cin:
            raise ValueError(f"a pad shortcut cannot shrink {cin} channels to {cout}")
        shortcut = L.PadShortcut(stride, cout - cin)
    else:
        shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
    out = [(s - 1) // stride + 1 for s in shape[1:]]
    return L.Residual(body, shortcut), (cout, *out)


def inception(f, shape, spec):
    _need_image(shape)
    cin, eps, k5 = shape[0], 1e-3, f["b5_kernel"]
    branches = [
        nn.Sequential(*_conv_bn_relu(cin, f["b1"], 1, eps=eps)),
        nn.Sequential(
            *_conv_bn_relu(cin, f["b3_reduce"], 1, eps=eps),
            *_conv_bn_relu(f["b3_reduce"], f["b3"], 3, 1, 1, eps=eps),
        ),
        nn.Sequential(
            *_conv_bn_relu(cin, f["b5_reduce"], 1, eps=eps),
            *_conv_bn_relu(f["b5_reduce"], f["b5"], k5, 1, k5 // 2, eps=eps),
        ),
        nn.Sequential(nn.MaxPool2d(3, 1, 1), *_conv_bn_relu(cin, f["pool_proj"], 1, eps=eps)),
    ]
    if k5 % 2 == 0:
        raise ValueError(f"b5_kernel must be odd to keep the size, got {k5}")
    cout = f["b1"] + f["b3"] + f["b5"] + f["pool_proj"]
    return L.Concat(*branches), (cout, *shape[1:])


def dense_block(f, shape, spec):
    _need_image(shape)
    c, growth, inner = shape[0], f["growth"], f["bn_size"] * f["growth"]
    blocks = []
    for _ in range(f["layers"]):
        body = [
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, inner, 1, bias=False),
            nn.BatchNorm2d(inner),
            nn.ReLU(inplace=True),
            nn.Conv2d(inner, growth, 3, 1, 1, bias=False),
        ]
        if f["dropout"]:
            body.append(nn.Dropout(f["dropout"]))
        blocks.append(L.DenseLayer(nn.Sequential(*body)))
        c += growth
    return nn.Sequential(*blocks), (c, *shape[1:])


def transition(f, shape, spec):
    _need_image(shape)
    c = shape[0]
    cout = f.get("filters") or int(c * f["compression"])
    if cout < 1:
        raise ValueError(
            f"compression {f['compression']:g} of {c} channel(s) leaves {cout}; "
            "raise compression or give filters"
        )
    if min(shape[1:]) < 2:
        raise ValueError(
            f"needs an input of at least 2x2 for its 2x2 average pooling, got {shape[1]}x{shape[2]}"
        )
    module = nn.Sequential(
        nn.BatchNorm2d(c),
        nn.ReLU(inplace=True),
        nn.Conv2d(c, cout, 1, bias=False),
        nn.AvgPool2d(2, 2),
    )
    return module, (cout, shape[1] // 2, shape[2] // 2)
