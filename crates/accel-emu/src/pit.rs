//! 8254 PIT (in progress)
