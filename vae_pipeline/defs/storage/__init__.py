"""The data folder (a local path or an object store) and the manifests kept in it; every path comes from here."""
