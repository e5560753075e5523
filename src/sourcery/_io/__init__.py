"""Plumbing shared by every adapter: the one driver-error map and the open helper."""
