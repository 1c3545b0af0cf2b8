"""Where a report's sentences refer to in the image: sentence splitting, locations in patient space, and the
methods that find them (docs/grounding.md). No Qt; torch only inside the methods that run a model."""
