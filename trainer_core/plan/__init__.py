"""Will it fit: the machine probe, the memory model, the recommendation, and the one preset -> plan bridge."""
