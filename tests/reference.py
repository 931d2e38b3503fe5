"""An independent NumPy reference of the textbook equations, written with plain loops.

Nothing here calls PyTorch: these functions are what the layers are held to.
"""

import numpy as np


def pad(x, p):
    """Zero-pad the last two axes by p on every side."""
    return np.pad(x, [(0, 0)] * (x.ndim - 2) + [(p, p), (p, p)])


def conv_forward(image, kernels, bias, stride=1, padding=0):
    """out[k, i, j] = sum_c sum_xy image[c, i*s + x, j*s + y] * G[k, c, x, y] + b[k].

    A filter spans the whole input depth; k filters give k output maps.
    """
    image = pad(image, padding)
    c, h, w = image.shape
    k, _, m, n = kernels.shape
    assert (h - m) % stride == 0 and (w - n) % stride == 0
    out_h, out_w = (h - m) // stride + 1, (w - n) // stride + 1
    out = np.zeros((k, out_h, out_w))
    for f in range(k):
        for i in range(out_h):
            for j in range(out_w):
                total = bias[f]
                for ch in range(c):
                    for x in range(m):
                        for y in range(n):
                            total += (
                                image[ch, i * stride + x, j * stride + y] * kernels[f, ch, x, y]
                            )
                out[f, i, j] = total
    return out


def conv_grad_kernels(image, grad_out, kernel_shape, stride=1, padding=0):
    """dL/dG[k, c, x, y] = sum_ij dL/dOut[k, i, j] * I[c, i*s + x, j*s + y]."""
    image = pad(image, padding)
    k, c, m, n = kernel_shape
    grad = np.zeros(kernel_shape)
    for f in range(k):
        for ch in range(c):
            for x in range(m):
                for y in range(n):
                    for i in range(grad_out.shape[1]):
                        for j in range(grad_out.shape[2]):
                            grad[f, ch, x, y] += (
                                grad_out[f, i, j] * image[ch, i * stride + x, j * stride + y]
                            )
    return grad


def conv_grad_input(grad_out, kernels, input_shape, stride=1, padding=0):
    """dL/dI[c, x, y] = sum_k sum_ij dL/dOut[k, i, j] * G[k, c, x - i*s, y - j*s] (where in range)."""
    c, h, w = input_shape
    k, _, m, n = kernels.shape
    grad = np.zeros((c, h + 2 * padding, w + 2 * padding))
    for ch in range(c):
        for x in range(grad.shape[1]):
            for y in range(grad.shape[2]):
                total = 0.0
                for f in range(k):
                    for i in range(grad_out.shape[1]):
                        for j in range(grad_out.shape[2]):
                            gx, gy = x - i * stride, y - j * stride
                            if 0 <= gx < m and 0 <= gy < n:
                                total += grad_out[f, i, j] * kernels[f, ch, gx, gy]
                grad[ch, x, y] = total
    return grad[:, padding : padding + h, padding : padding + w]


def pool_windows(x, k, stride):
    """Yield (i, j, window) over non-overlapping or strided k x k windows of a 2-D map."""
    h, w = x.shape
    for i in range((h - k) // stride + 1):
        for j in range((w - k) // stride + 1):
            yield i, j, x[i * stride : i * stride + k, j * stride : j * stride + k]


def pool_forward(x, k, stride, mode):
    h, w = x.shape
    out = np.zeros(((h - k) // stride + 1, (w - k) // stride + 1))
    for i, j, win in pool_windows(x, k, stride):
        out[i, j] = {"max": win.max(), "mean": win.mean(), "sum": win.sum()}[mode]
    return out


def pool_backward(x, grad_out, k, stride, mode):
    """Max routes the gradient to the arg-max; mean spreads it 1/k^2; sum copies it."""
    grad = np.zeros_like(x)
    for i, j, win in pool_windows(x, k, stride):
        g = grad_out[i, j]
        rows, cols = slice(i * stride, i * stride + k), slice(j * stride, j * stride + k)
        if mode == "max":
            a, b = np.unravel_index(np.argmax(win), win.shape)
            grad[i * stride + a, j * stride + b] += g
        elif mode == "mean":
            grad[rows, cols] += g / (k * k)
        else:
            grad[rows, cols] += g
    return grad


def stochastic_expectation(window):
    """Evaluation rule of stochastic pooling: sum(p_i * a_i), p_i = a_i / sum(a); 0 if all zero."""
    a = np.maximum(np.asarray(window, dtype=np.float64).ravel(), 0)
    total = a.sum()
    return 0.0 if total == 0 else float((a / total * a).sum())
