"""The chat pane and its standalone app."""
