"""Dagster glue: partitions, resources, assets and checks; thin wrappers over lib/ and store/."""
