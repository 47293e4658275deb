"""vlmtune's engine: presets, data, model loading, training, chat and export. Never imports Textual."""

__version__ = "0.1.0"
