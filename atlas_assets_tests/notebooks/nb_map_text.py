"""A text notebook as Nomic's README, examples/ and docs write it, on the bundled arXiv sample.

From: README (map_data, embeddings, topics, vector search under wait_for_dataset_lock),
examples/map_text_and_get_topics.py, examples/interactive_session.py,
examples/map_text_progressively.py (add_data then rebuild under the lock), the cookbook's
connectors (create_index(modality="text"), add_data(pbar=...)), docs/map_state/*.md and the
data_inference option models. Only the import differs when run: ``test_notebooks.py`` swaps
``nomic`` for ``atlas_assets``. ``ARXIV_SAMPLE``/``ROWS`` stand in for ``load_dataset``.
"""

import io
import json
import os
import warnings
from pprint import pprint

import faiss
import numpy as np
import pandas as pd
from nomic import AtlasDataset, atlas
from nomic.data_inference import (
    NomicDuplicatesOptions,
    NomicEmbedOptions,
    NomicTopicOptions,
    ProjectionOptions,
)
from nomic.dataset import AtlasProjection
from tqdm import tqdm

rows = int(os.environ.get("ROWS", "60"))
frame = pd.read_csv(os.environ["ARXIV_SAMPLE"], dtype={"arxiv_id": str}).head(rows)
# Like load_dataset("ag_news") rows: complete records (the sample's sparse columns left out).
documents = frame[["arxiv_id", "title", "abstract", "archive", "v1_created"]].to_dict("records")
first_upload, second_upload = documents[: rows * 2 // 3], documents[rows * 2 // 3 :]

# The option models, as the docs build them, with the hosted client's own fields.
topic_options = NomicTopicOptions(build_topic_model=True, topic_label_field="title")
topic_options.cluster_method = "fast"  # options are assignable, as in the hosted client
topic_options.enforce_topic_hierarchy = True
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    projection = ProjectionOptions(
        model="nomic-project-v2", n_neighbors=None, min_dist=None, local_neighborhood_size=16
    )
assert any("local_neighborhood_size" in str(w.message) for w in caught)  # no local meaning
projection.n_epochs = 200

dataset = atlas.map_data(
    data=first_upload,
    indexed_field="abstract",
    identifier="News 10k For Topic Extraction",
    description="News 10k For Topic Extraction",
    id_field="arxiv_id",
    is_public=True,
    colorable_fields=["archive"],
    projection=projection,
    topic_model=topic_options,
    duplicate_detection=NomicDuplicatesOptions(tag_duplicates=True, duplicate_cutoff=0.1),
    embedding_model=NomicEmbedOptions(),  # the local default model
)
print(dataset.maps)
assert dataset.identifier == "news-10k-for-topic-extraction"

with dataset.wait_for_dataset_lock():
    pprint(dataset.maps[0].topics.group_by_topic(topic_depth=1)[0])
    map = dataset.maps[0]
    print(map.map_link)
    print(dataset.total_datums)
assert isinstance(map, AtlasProjection)
assert map.map_link == "http://127.0.0.1:8700/?dataset=news-10k-for-topic-extraction"
assert map.dataset_link == map.map_link and dataset.total_datums == len(first_upload)
assert not dataset.is_locked and dataset.is_accepting_data

# README: embeddings, then vector search under the lock, then get_data.
projected_embeddings = map.embeddings.projected
latent_embeddings = map.embeddings.latent
assert list(projected_embeddings.columns) == ["arxiv_id", "x", "y"]
with dataset.wait_for_dataset_lock():
    neighbors, _ = map.embeddings.vector_search(ids=[documents[0]["arxiv_id"]], k=5)
similar_datapoints = dataset.get_data(ids=neighbors[0])
assert [d["arxiv_id"] for d in similar_datapoints] == neighbors[0] and len(neighbors[0]) == 5

# A common cell: normalise the latent vectors in place for a faiss index.
latent = map.embeddings.latent
latent /= np.linalg.norm(latent, axis=1, keepdims=True)
faiss.normalize_L2(latent)
index = faiss.IndexFlatIP(latent.shape[1])
index.add(latent)
_, found = index.search(latent[:3], 1)
assert found[:, 0].tolist() == [0, 1, 2]

# Topics, duplicates and tags as the docs use them.
topic_df = map.topics.df
deepest = f"topic_depth_{map.topics.depth}"
assert map.topics.depth >= 2 and topic_df.notna().all().all()  # a topic at every depth
assert topic_df.groupby(deepest).size().sum() == len(topic_df)  # so no row drops out
for parent, children in map.topics.hierarchy.items():
    assert children, parent  # a topic that does not split carries on as one child
duplicates = map.duplicates.df
assert set(duplicates["duplicate_class"]) <= {
    "singleton",
    "retention candidate",
    "deletion candidate",
}
for tag in map.tags.get_tags():
    assert tag["tag_definition_id"] and tag["tag_name"]

# Identity, as notebooks print it.
assert dataset.meta["unique_id_field"] == "arxiv_id" and dataset.modality == "text"
assert dataset.schema.names[0] == "arxiv_id" and "abstract" in dataset.schema.names
assert [i.name for i in dataset.indices] == ["News 10k For Topic Extraction"]
assert dataset.indices[0].indexed_field == "abstract"
assert [p.projection_id for p in dataset.projections] == [map.projection_id]
assert dataset.get_map().id == map.id
assert dataset.get_map(projection_id=map.projection_id).id == map.id
assert dataset.get_map(atlas_index_id=map.atlas_index_id).id == map.id
assert dataset.get_map("News 10k For Topic Extraction").id == map.id

# A hosted-only model is refused before anything runs.
try:
    dataset.create_index(indexed_field="abstract", embedding_model="nomic-embed-text-v1.5")
except ValueError as err:
    assert "nomic-embed-text-v1.5" in str(err) and "embedding_model unset" in str(err)
else:
    raise AssertionError("a hosted-only model was accepted")

# Images are not supported: a clear error, nothing written.
try:
    atlas.map_data(blobs=["cat.png"], identifier="Images")
except ValueError as err:
    assert "not supported" in str(err)
else:
    raise AssertionError("blobs were accepted")
assert AtlasDataset("news.v2").identifier == "newsv2"  # display names become slugs
assert AtlasDataset("Compat News (AG) 200").identifier == "compat-news-ag-200"

# examples/map_text_progressively.py, with the cookbook's create_index(modality="text").
with dataset.wait_for_dataset_lock():
    bar = tqdm(total=len(second_upload), file=io.StringIO())
    dataset.add_data(data=second_upload, pbar=bar)
    assert bar.n == len(second_upload)
    map = dataset.create_index(
        indexed_field="abstract",
        modality="text",
        topic_model={"build_topic_model": True, "cluster_method": "fast"},
        duplicate_detection=True,
        projection=None,
    )
assert map.name == "News 10k For Topic Extraction"  # the map was rebuilt, not added
assert len(dataset.get_map().data.df) == rows == dataset.total_datums
assert map.embeddings.latent.shape == (rows, 384)

summary = {
    "identifier": dataset.identifier,
    "partition": dataset._paths.partition_key,
    "root": str(dataset._paths.root),
    "map_id": map.id,
}
dataset.delete()  # a cleanup cell: the dataset, its tags and its Dagster partition go
assert not os.path.exists(summary["root"])
print(json.dumps(summary))
