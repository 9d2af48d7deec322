"""rixin (日新): an open, private-deployable large-model platform with OpenAI's contract."""

__version__ = "0.1.0"
