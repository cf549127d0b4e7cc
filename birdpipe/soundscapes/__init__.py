"""Annotated long field recordings (soundscapes) scored per segment, as BirdSet (Rauch et al.) does: each file is
cut into fixed segments, a segment is positive for a species when an annotated event of that species overlaps it,
and a model's window scores are pooled into segment scores. :mod:`.annotations` reads Raven selection tables or an
``annotations.csv`` into checked events and a val/test split of whole files; :mod:`.segments` turns files and events
into segments, their truth and their scores.
"""
