"""Records that travel on Kafka topics; each mirrors the newest ``schemas/<record>/vN.avsc``."""
