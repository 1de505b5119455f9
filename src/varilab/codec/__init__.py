"""Bitstreams: integer probability tables, range coding by constriction, and the self-describing `.vlc` container.
A layer beside core: it imports no other varilab package."""
