

pub mod converse;
pub mod delivery;
pub mod messenger;
pub mod telegram;
