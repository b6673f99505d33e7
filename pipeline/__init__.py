"""Ray Data stages and jobs that archive and restore images with TADM.

Stages are plain callables (`dict[str, np.ndarray] -> dict[str, np.ndarray]`) and classes that
need no running Ray; only `archive.build_graph` and `restore.build_graph` choose actor pools,
GPUs and batch sizes.
"""
