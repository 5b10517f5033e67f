//! x87 semantics as pure functions (owned by emusimd; in progress).
