"""Where the repository and the shared real-music data are, for every test module."""
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Real, freely licensed music and MIDI beside the checkout; tests that need it skip without it.
SHARED_DATA = REPO.parent / "shared" / "data"
