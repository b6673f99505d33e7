"""Ray Data stages and jobs that archive and restore images with TADM.

Stages are plain callables (`dict[str, np.ndarray] -> dict[str, np.ndarray]`) and classes that
need no running Ray; only `job.build_graph` (archive, restore) and `serve.app.build_app` choose
actor pools, GPUs and batch sizes. The archive format they write is in `format.py`.
"""
