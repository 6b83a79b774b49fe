"""The spectral stages around the optimiser, each behind one interface, and the chain that runs them (no torch)."""
