"""SAM 2 video tracking sessions: the tracking core (samserve.core.video_tracking) over Triton's
tracker models, frames through the embedding cache, session state in the state Redis."""
