"""Anonymization: every face covered in every frame that leaves, failing closed (P2).

- :mod:`~firmware.anonymize.cover`: the masks themselves (mosaic with shuffled cells, blur,
  solid; box or ellipse) and the whole-frame mask for failures;
- :mod:`~firmware.anonymize.hold`: keeps covering a face the detector lost for a moment, moved
  with its estimated motion;
- :mod:`~firmware.anonymize.backfill`: covers a face walking into view in the frames held back
  before its first detection (a short look-back delay);
- :mod:`~firmware.anonymize.stage`: detect, hold, cover, one frame at a time; its result type
  carries no raw pixels;
- :mod:`~firmware.anonymize.ahead`: for file jobs, several frames detected at once, handed back
  to the stage in order.
"""
