"""The tile server behind `tadm serve`: the Ray Serve app, the tile service, its caches."""
