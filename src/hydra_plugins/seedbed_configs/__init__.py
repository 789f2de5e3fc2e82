"""seedbed's configs, composable without importing seedbed first (see search_path)."""
