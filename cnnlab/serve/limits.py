"""The server's caps, defined once: `create_app` and the flags of `cnnlab serve` take them from
here. Torch-free, so that `cnnlab --help` stays instant.
"""

# A request body. The page's drawings are a few kB; base64 in JSON adds a third to an image.
MAX_BODY = 2 * 1024 * 1024

# Pixels of one uploaded image, checked from its header before decoding. Lower than
# cnnlab.data.images.MAX_PIXELS (which guards files a user chose to read) because a server
# decodes for strangers, several at once. The costliest image that fits in MAX_BODY is a
# progressive JPEG: libjpeg keeps every DCT coefficient of the full image whatever the
# output scale, 6 bytes a pixel for RGB and 8.5 for CMYK while it decodes (PNG: 4-5). At
# this cap WORKERS such decodes at once took the server from 263 MB to a peak of 715-738 MB
# RSS, under 1 GB (benchmarks/serve.py; tests/test_serve_hostile.py checks the bound).
MAX_PIXELS = 12_000_000

# WebP decodes at about 16 bytes a pixel (libwebp's canvases and Pillow's copy of the
# frame), four times a PNG: a WebP upload may have MAX_PIXELS / WEBP_COST pixels. So may a
# 16-bit or float image (TIFF, PNG): its pixels are scaled to 8 bits in a full-size copy.
WEBP_COST = 4

# Requests decoded and run through the model at the same time; the rest wait their turn.
# More than the cores gains nothing (each request's torch ops already use every core) and
# this, not the number of clients, is what bounds the memory that decoding takes.
WORKERS = 4

# Uploads are shrunk in uint8 (JPEG already while decoding) until their longest side is at
# most this, before any float work: far more than the 20x20 box a digit is fitted into, or a
# 28x28 / 32x32 input, needs. Models with larger inputs get WORK_SCALE times their side.
WORK_SIDE = 512
WORK_SCALE = 2
