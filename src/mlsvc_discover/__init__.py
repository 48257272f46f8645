"""mlsvc-discover."""
