"""The explorer's HTTP API on a real built map: answers, binary formats, and refusals."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from starlette.testclient import TestClient

from atlas_assets.explorer.server import create_app
from atlas_assets_tests.explorer.conftest import PAYLOAD, PAYLOAD_ID, ExplorerMap

BASE = "http://127.0.0.1:8000"
SAME_ORIGIN = {"Origin": BASE, "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def client(explorer_map: ExplorerMap) -> TestClient:
    return TestClient(create_app(explorer_map.dataset), base_url=BASE)


def _frame(body: bytes) -> tuple[dict, bytes]:
    (length,) = struct.unpack_from("<I", body)
    header = json.loads(body[4 : 4 + length])
    start = 4 + length + (-(4 + length)) % 4
    return header, body[start:]


def _path(explorer_map: ExplorerMap, rest: str) -> str:
    return f"/api/maps/{explorer_map.dataset}{rest}"


def test_meta_points_and_colours(client: TestClient, explorer_map: ExplorerMap) -> None:
    n = len(explorer_map.ids)
    meta = client.get(_path(explorer_map, "/meta")).json()
    assert meta["n"] == n and meta["id_field"] == "arxiv_id" and meta["text_field"] == "title"
    assert {"none", "tag", "field:archive"} <= {o["key"] for o in meta["colour_options"]}

    header, payload = _frame(client.get(_path(explorer_map, "/points")).content)
    xy = np.frombuffer(payload, np.float32)
    assert header == {"n": n} and xy.shape == (2 * n,)
    assert np.all(np.abs(xy) <= 1) and np.isfinite(xy).all()

    header, payload = _frame(client.get(_path(explorer_map, "/colours?by=field:archive")).content)
    codes = np.frombuffer(payload, np.uint16)
    assert len(codes) == n and codes.max() < len(header["categories"])
    assert sum(c["count"] for c in header["categories"]) == n


def test_datum_is_returned_as_data(client: TestClient, explorer_map: ExplorerMap) -> None:
    datum = client.get(_path(explorer_map, f"/datums/{explorer_map.payload_index}")).json()
    assert datum["id"] == PAYLOAD_ID
    assert {"name": "abstract", "value": PAYLOAD} in datum["fields"]


def test_keyword_and_semantic_search(client: TestClient, explorer_map: ExplorerMap) -> None:
    found = client.get(_path(explorer_map, "/search?q=pebble game")).json()
    assert [r["id"] for r in found["results"]] == ["0704.0002"]
    assert found["indices"] == [explorer_map.ids.index("0704.0002")]
    meaning = client.get(
        _path(explorer_map, "/search?mode=semantic&k=5&q=sparse graphs and rigidity")
    ).json()
    assert "0704.0002" in [r["id"] for r in meaning["results"]]


def test_tagging_lands_in_the_tag_store_and_export(
    client: TestClient, explorer_map: ExplorerMap
) -> None:
    from atlas_assets import AtlasDataset

    picked = [3, 5, 8]
    answer = client.post(
        _path(explorer_map, "/tags"),
        content=json.dumps({"tag": "from-api", "indices": picked}),
        headers=SAME_ORIGIN,
    )
    assert answer.status_code == 200, answer.text
    tags = AtlasDataset(explorer_map.dataset).maps[0].tags
    assert tags.get_datums_in_tag("from-api") == sorted(explorer_map.ids[i] for i in picked)
    selected = client.get(_path(explorer_map, "/select?by=tag&value=from-api")).json()
    assert selected["indices"] == picked

    csv = client.post(
        _path(explorer_map, "/export"),
        content=json.dumps({"indices": picked, "format": "csv"}),
        headers=SAME_ORIGIN,
    )
    assert csv.status_code == 200 and "attachment" in csv.headers["content-disposition"]
    as_text = pacsv.ConvertOptions(column_types={"arxiv_id": pa.string()})
    table = pacsv.read_csv(io.BytesIO(csv.content), convert_options=as_text)
    assert table.column("arxiv_id").to_pylist() == [explorer_map.ids[i] for i in picked]
    parquet = client.post(
        _path(explorer_map, "/export"),
        content=json.dumps({"indices": picked, "format": "parquet"}),
        headers=SAME_ORIGIN,
    )
    assert pq.read_table(io.BytesIO(parquet.content)).num_rows == 3


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/maps/%2E%2E/meta", 400),  # ".." never reaches the file system
        ("/api/maps/bad%20name!/meta", 400),
        ("/api/maps/no-such-dataset/meta", 404),
        ("/api/maps/{ds}/datums/abc", 400),
        ("/api/maps/{ds}/datums/99999", 400),
        ("/api/maps/{ds}/colours?by=../../etc/passwd", 400),
        ("/api/maps/{ds}/search?q=", 400),
        ("/api/maps/{ds}/search?q=x&mode=regex", 400),
        ("/api/maps/{ds}/search?q=x&mode=semantic&k=lots", 400),
        ("/api/maps/{ds}/select?by=field:archive&value=nope", 404),
        ("/api/maps/{ds}/select?by=tag&value=no-such-tag", 400),
        ("/static/%2e%2e/server.py", 404),
        ("/api/nothing-here", 404),
    ],
)
def test_malformed_requests_get_a_4xx_with_a_message(
    client: TestClient, explorer_map: ExplorerMap, path: str, status: int
) -> None:
    answer = client.get(path.replace("{ds}", explorer_map.dataset))
    assert answer.status_code == status, answer.text
    assert answer.json()["error"] and "Traceback" not in answer.text


def test_dataset_without_a_map_is_a_409(client: TestClient) -> None:
    from atlas_assets import AtlasDataset

    AtlasDataset("unmapped").add_data([{"id_x": "a", "text": "hello"}])
    answer = client.get("/api/maps/unmapped/meta")
    assert answer.status_code == 409 and "atlas index" in answer.json()["error"]


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        ({"tag": "evil", "indices": [1]}, {"Origin": "http://evil.example"}, 403),
        ({"tag": "evil", "indices": [1]}, {"Origin": "null"}, 403),
        ({"tag": "evil", "indices": [1]}, {"Sec-Fetch-Site": "cross-site"}, 403),
        ({"tag": "evil", "indices": [1]}, {"Content-Type": "text/plain"}, 415),
        (
            {"tag": "evil", "indices": [1]},
            {"Content-Type": "application/x-www-form-urlencoded"},
            415,
        ),
        ("not json", {}, 400),
        ([1, 2], {}, 400),
        ({"tag": "t", "indices": "1,2"}, {}, 400),
        ({"tag": "t", "indices": [1.5]}, {}, 400),
        ({"tag": "t", "indices": [True]}, {}, 400),
        ({"tag": "t", "indices": [-1]}, {}, 400),
        ({"tag": "t", "indices": [10**9]}, {}, 400),
        ({"tag": "", "indices": [1]}, {}, 400),
        ({"tag": 7, "indices": [1]}, {}, 400),
        ({"tag": "t", "indices": [1], "remove": "yes"}, {}, 400),
    ],
)
def test_tagging_refuses_cross_origin_and_bad_bodies(
    client: TestClient, explorer_map: ExplorerMap, body, headers: dict, status: int
) -> None:
    from atlas_assets import AtlasDataset

    sent = {"Content-Type": "application/json", **headers}
    content = body if isinstance(body, str) else json.dumps(body)
    answer = client.post(_path(explorer_map, "/tags"), content=content, headers=sent)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"] and "Traceback" not in answer.text
    names = [t["tag_name"] for t in AtlasDataset(explorer_map.dataset).maps[0].tags.get_tags()]
    assert "evil" not in names and "t" not in names


def test_foreign_host_header_is_refused(explorer_map: ExplorerMap) -> None:
    """DNS rebinding: a page on evil.example resolving to 127.0.0.1 gets nothing."""
    rebound = TestClient(create_app(explorer_map.dataset), base_url="http://evil.example:8000")
    assert rebound.get(_path(explorer_map, "/meta")).status_code == 421
    assert rebound.get("/").status_code == 421


def test_page_is_served_with_a_strict_policy(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "app.js" in page.text
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert client.get("/static/vendor/regl-scatterplot.bundle.js").status_code == 200


def test_cli_serve_is_registered() -> None:
    from atlas_assets.cli import build_parser

    args = build_parser().parse_args(["serve", "my-data", "--port", "9999"])
    assert (args.dataset, args.host, args.port) == ("my-data", "127.0.0.1", 9999)
    assert (args.token, args.allow_host) == (False, [])
    args = build_parser().parse_args(
        ["serve", "d", "--token", "--allow-host", "a.example", "--allow-host", "b.example"]
    )
    assert args.token and args.allow_host == ["a.example", "b.example"]
