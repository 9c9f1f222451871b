import dagster as dg

# One partition per dataset; keys are validated slugs (see atlas_assets.store.layout).
atlas_datasets = dg.DynamicPartitionsDefinition(name="atlas_datasets")
