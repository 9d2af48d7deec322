"""The agent run engine and its tools.

One engine (``engine.RunEngine``) executes runs for every agent API surface: OpenAI's Responses
API today (``rixin.services.responses``), the legacy Assistants v2 runs later. A run is a state
machine persisted at every step; tools come from a registry (``tools.registry``); the model is
reached through a ``steps.ModelStep``. Nothing here knows which API surface created the run.
"""
