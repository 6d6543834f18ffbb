"""Funnel reports and what is made of them.

``python`` and ``sql`` compute the same report (in Python from the entries; inside
PostgreSQL), ``computation`` picks one per database, ``cache`` keeps answers while they are
exact, ``engine`` serves them to the routes; ``trends``, ``forecast``, ``plan`` and
``diagnosis`` are pure functions over reports and entries.
"""
