"""The local preview page: anonymized live view, counts, health and the counting line editor.

:class:`PreviewHub` is where the running service hands over anonymized frames and figures;
:class:`PreviewServer` serves the page from them. Importing this package starts nothing.
"""

from firmware.preview.hub import PreviewHub
from firmware.preview.server import PreviewServer, requires_token

__all__ = ["PreviewHub", "PreviewServer", "requires_token"]
