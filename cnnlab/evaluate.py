"""Kept so that `from cnnlab.evaluate import ...` goes on working: see cnnlab.infer.evaluate."""

from cnnlab.infer.evaluate import *  # noqa: F403
from cnnlab.infer.evaluate import (  # noqa: F401
    eval_data,
    image_files,
    input_recipe,
    load_for,
    metrics,
    normalizer,
    plot_confusion,
    prepare_image,
    top_k,
)
