"""The option models under the hosted client's module path (``nomic.data_inference``).

``from atlas_assets.data_inference import NomicTopicOptions, ProjectionOptions`` works as
``from nomic.data_inference import ...`` does; the models live in :mod:`atlas_assets.options`.
"""

from atlas_assets.options import (
    NomicDuplicatesOptions,
    NomicEmbedOptions,
    NomicProjectOptions,
    NomicTopicOptions,
    ProjectionOptions,
)

__all__ = [
    "NomicDuplicatesOptions",
    "NomicEmbedOptions",
    "NomicProjectOptions",
    "NomicTopicOptions",
    "ProjectionOptions",
]
