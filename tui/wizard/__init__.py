"""The wizard: the app, the draft preset it edits, one widget per step."""
