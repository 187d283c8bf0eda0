"""Hostile: one function returns a string, the other is missing."""


def kl_bound(n):
    return "about log n"
