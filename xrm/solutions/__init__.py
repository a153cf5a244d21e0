"""Solution packs beyond reading them: sample data, and (later) the pack lifecycle."""
