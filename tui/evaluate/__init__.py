"""Did it help? A run's evaluation in the app: base | tuned | delta, and the held-out examples side by side."""
