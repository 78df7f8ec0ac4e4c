"""ECG exam PDF anonymisation: the anonymiser library and its Ray Data / process-pool pipeline."""
