"""Synthetic data sets generated on the fly, and loaders for standard files a user already has."""
