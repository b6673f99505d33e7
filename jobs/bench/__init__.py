"""`tadm bench`: rate-distortion against image codecs, throughput, memory and the cost of the
paper's configuration. Each concept is one module; cli.py wires them together."""
