"""How asset values reach disk under data/ (atomic, partition-aware, registered in the catalogue)."""
