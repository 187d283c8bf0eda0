"""Hostile: loops forever while being imported."""
while True:
    pass
