"""Reading images: the demo's synthetic generator and image folders on disk."""
