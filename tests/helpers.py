"""Helpers shared by every test folder (plain functions and classes; fixtures live in conftest.py).

Sections: images and HTTP (gateway tests), then checkpoint files (model_export tests).
"""

from __future__ import annotations

# --------------------------------------------------------------------------------------------
# Images and HTTP
# --------------------------------------------------------------------------------------------



# (section boundary: keep the blank lines above and below, two people edit the two sections)



# --------------------------------------------------------------------------------------------
# Checkpoint files (model_export tests)
# --------------------------------------------------------------------------------------------
