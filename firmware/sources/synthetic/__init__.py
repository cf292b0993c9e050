"""The synthetic store entrance: people with real face photos crossing a counting line.

- :mod:`~firmware.sources.synthetic.faces`: the photos (from scikit-image's bundled data);
- :mod:`~firmware.sources.synthetic.people`: scripted walks, people, ground-truth crossings;
- :mod:`~firmware.sources.synthetic.sprites`: rendering a person and the floor;
- :mod:`~firmware.sources.synthetic.bodies`: full walking bodies a person detector sees (opt-in,
  ``SyntheticScene(bodies=True)``);
- :mod:`~firmware.sources.synthetic.scene`: the :class:`FrameSource` that puts them together.
"""
