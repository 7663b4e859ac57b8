//! Tests that drive the whole engine through commands and time, kept apart from the
//! modules whose behaviour they check so those stay readable.

mod admission;
mod retry;
