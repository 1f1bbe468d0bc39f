"""`pilot serve --workers N`: N worker processes share the xDS port under one supervisor.

handle.py      the supervisor's view of one worker: its process, state and a private HTTP client
worker.py      the worker process: the full PilotServer pipeline with a shared port and a private monitoring socket
supervisor.py  port reservation, starting, restarting (bounded backoff) and stopping the workers
aggregate.py   the public monitoring server: /ready, /metrics and /debug/* over every worker
metrics.py     Prometheus text parsing and merging across workers (pure)
"""
