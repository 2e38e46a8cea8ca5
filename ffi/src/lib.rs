//! C ABI over the wsguard core (see issue: C ABI).
//!
//! Placeholder workspace member: it links the core so the workspace layout is fixed, and exports
//! nothing yet. Its own issue adds the adapter; per STYLE.md it must stay a thin layer that converts
//! input, calls one core function and converts the output.
