//! Channels: one module per channel. Each parses what arrives into an engine event and
//! delivers what the engine renders. Channels know nothing of flows.

pub mod converse;
pub mod delivery;
pub mod messenger;
pub mod telegram;
