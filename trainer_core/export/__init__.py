"""Taking a run elsewhere: merged weights, TRL CLI config and launch lines."""
