//! Builds the freestanding test guests in the repository's `guests/` folder.
