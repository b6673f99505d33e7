"""`tadm bench`: rate-distortion against image codecs, throughput, memory and the cost of the
paper's configuration. Each concept is one module; jobs/bench.py wires them together."""
