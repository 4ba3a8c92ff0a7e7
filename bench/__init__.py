"""``python -m bench``: the delivery-daemon benchmark (ingest vs a bare baseline, end-to-end latency, backlog
drain, memory, growth). Every figure is printed next to a baseline measured in the same run."""
