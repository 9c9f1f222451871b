from atlas_assets.lib.diff import id_changes, label_changes


def test_id_changes():
    assert id_changes(None, ["a", "b"]) == {"added": 2, "removed": 0}
    assert id_changes(["a", "b", "c"], ["b", "c", "d", "e"]) == {"added": 2, "removed": 1}


def test_label_changes_only_counts_datums_in_both_builds():
    result = label_changes(["a", "b", "c"], ["X", "Y", "Y"], ["b", "c", "d"], ["Y", "Z", "W"])
    assert result == {"changed": 1, "appeared": ["W", "Z"], "vanished": ["X"]}
