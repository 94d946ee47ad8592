"""Exercise of notebook 08_engine: one paged attention layer, checked against `transformers`
layer by layer, then run as every layer of the engine (see `paged_layer`)."""

from __future__ import annotations

from radixlab.exercises.paged_layer import (
    LayerBatch,
    LayerInput,
    LayerModel,
    check_layer,
    layer,
    reference_layer,
    use_layer,
)

__all__ = ["LayerBatch", "LayerInput", "LayerModel", "check_layer", "layer", "reference_layer",
           "use_layer"]
