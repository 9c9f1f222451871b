"""Nomic's examples/map_embeddings.py and examples/map_embeddings_progressively.py, smaller.

Only the import differs when run: ``test_notebooks.py`` swaps ``nomic`` for ``atlas_assets``.
"""

import json
import re

import numpy as np
from nomic import atlas

# examples/map_embeddings.py: vectors alone, no other data, no name.
num_embeddings = 120
embeddings = np.random.default_rng(7).random((num_embeddings, 10))

response = atlas.map_data(embeddings=embeddings)
print(response)
assert re.fullmatch(r"[a-z]+-[a-z]+(-\d+)?", response.identifier), response.identifier
assert response.total_datums == num_embeddings and response.modality == "embedding"
projected = response.maps[0].embeddings.projected
assert projected.shape == (num_embeddings, 3) and list(projected.columns)[1:] == ["x", "y"]
assert response.maps[0].embeddings.latent.shape == (num_embeddings, 10)

# examples/map_embeddings_progressively.py
data = [{"upload": "1"} for i in range(len(embeddings))]

dataset = atlas.map_data(
    embeddings=embeddings,
    data=data,
    identifier="A Map That Gets Updated",
    colorable_fields=["upload"],
)
map = dataset.get_map("A Map That Gets Updated")
print(map)
assert str(map).endswith("/?dataset=a-map-that-gets-updated")

# embeddings with shifted mean.
embeddings += np.ones(shape=(num_embeddings, 10))
data = [{"upload": "2"} for i in range(len(embeddings))]

with dataset.wait_for_dataset_lock() as project:
    assert project is dataset
    dataset.add_data(embeddings=embeddings, data=data)
    dataset.rebuild_maps()

# What the notebook goes on to use: the updated map holds both uploads.
map = dataset.get_map()
df = map.data.df
assert df["upload"].value_counts().to_dict() == {"1": num_embeddings, "2": num_embeddings}
assert len(map.embeddings.projected) == 2 * num_embeddings
assert df[dataset.id_field].is_unique
# Random positive vectors all lie close together: the derived duplicates tag lists them.
tags = map.tags.get_tags()
assert [t["tag_name"] for t in tags] == ["duplicates: deletion candidates"]
assert tags[0]["tag_definition_id"] == tags[0]["tag_id"]
assert tags[0]["metadata"]["count"] == len(map.duplicates.deletion_candidates()) > 0
print(json.dumps({"random_name": response.identifier, "updated": dataset.identifier}))
