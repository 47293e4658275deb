"""The live monitor: screen, its standalone app, the redraw budget, training in a worker."""
