"""Jobs: the train and ingest jobs, wiring only (logic lives in data, modeling and tracking)."""
