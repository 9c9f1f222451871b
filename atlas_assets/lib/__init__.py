"""Pure algorithms over numpy arrays and Arrow tables: no Dagster, no file layout."""
