"""Design filters, each a plugin: sensitivity, density, Heaviside projection."""
