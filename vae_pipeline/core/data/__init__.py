"""Raw IDX files, where they come from and when they have settled, the normalized tensor store and its checks."""
