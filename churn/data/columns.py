"""Names of the columns churn adds to a dataset (leading underscore: never a source column)."""

KEY_COLUMN = "_key"  # uint64 hash of the entity id (or of the whole row when there is no id)
LABEL_COLUMN = "_label"  # 0/1 label
SPLIT_COLUMN = "_split"  # train | validation | test
QUARANTINE_META = ["_reasons", "_source", "_line"]
