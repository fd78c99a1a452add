"""Optimizers: OC, femopt's MMA, and nlopt's gradient algorithms, each a plugin."""
